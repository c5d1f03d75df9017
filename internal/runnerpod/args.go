package runnerpod

import (
	"fmt"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// RunnerArgs is what the runner process in a pod built by BuildPod is started with, resolved
// against the pod: the token file is traced back to the Secret and key that fill it.
type RunnerArgs struct {
	// Subcommand is "one-job" (ephemeral) or "daemon" (persistent).
	Subcommand string
	// URL is the Forgejo instance (--url).
	URL string
	// UUID is the runner's registration UUID (--uuid).
	UUID string
	// TokenURL is --token-url as given, e.g. "file:/etc/forgejo-runner/token".
	TokenURL string
	// TokenPath is the file TokenURL names, inside the runner container.
	TokenPath string
	// TokenSecretName and TokenSecretKey name the Secret key mounted at TokenPath.
	TokenSecretName string
	TokenSecretKey  string
	// Labels are the --label values, in order.
	Labels []string
	// Handle is --handle, empty when the runner may take any matching job.
	Handle string
	// Wait is whether --wait was given.
	Wait bool
}

// ParseRunnerArgs reads back from pod the arguments its runner container starts forgejo-runner
// with. It accepts what BuildPod produces, including the program given as the container's command
// (with or without a leading init such as dumb-init) and both "--flag value" and "--flag=value";
// it rejects flags it does not know, so a change to BuildPod that the parser missed shows up as an
// error rather than a silently dropped setting.
func ParseRunnerArgs(pod *corev1.Pod) (RunnerArgs, error) {
	if pod == nil {
		return RunnerArgs{}, fmt.Errorf("parsing runner args: pod is nil")
	}
	c := findContainer(pod.Spec.Containers, RunnerContainerName)
	if c == nil {
		return RunnerArgs{}, fmt.Errorf("parsing runner args of pod %s: no container %q", pod.Name, RunnerContainerName)
	}
	ra, err := parseArgv(append(append([]string{}, c.Command...), c.Args...))
	if err != nil {
		return RunnerArgs{}, fmt.Errorf("parsing runner args of pod %s: %w", pod.Name, err)
	}
	if err := resolveTokenSecret(pod, c, &ra); err != nil {
		return RunnerArgs{}, fmt.Errorf("parsing runner args of pod %s: %w", pod.Name, err)
	}
	return ra, nil
}

func findContainer(cs []corev1.Container, name string) *corev1.Container {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}

// parseArgv parses a forgejo-runner command line. Whatever precedes the program (an init the
// container's command runs it under) is skipped.
func parseArgv(argv []string) (RunnerArgs, error) {
	start := -1
	for i, a := range argv {
		if path.Base(a) == runnerProgram {
			start = i
			break
		}
	}
	if start < 0 {
		return RunnerArgs{}, fmt.Errorf("%s not found in %q", runnerProgram, argv)
	}
	rest := argv[start+1:]
	if len(rest) == 0 || (rest[0] != subcommandOneJob && rest[0] != subcommandDaemon) {
		return RunnerArgs{}, fmt.Errorf("%s is not followed by %s or %s in %q", runnerProgram, subcommandOneJob, subcommandDaemon, argv)
	}
	ra := RunnerArgs{Subcommand: rest[0]}
	rest = rest[1:]

	for len(rest) > 0 {
		arg := rest[0]
		rest = rest[1:]
		name, value, hasValue := strings.Cut(strings.TrimPrefix(arg, "--"), "=")
		if !strings.HasPrefix(arg, "--") || name == "" {
			return RunnerArgs{}, fmt.Errorf("unexpected argument %q", arg)
		}
		if name == "wait" {
			switch {
			case !hasValue || value == "true":
				ra.Wait = true
			case value == "false":
				ra.Wait = false
			default:
				return RunnerArgs{}, fmt.Errorf("--wait=%q is not a boolean", value)
			}
			continue
		}
		if !hasValue {
			if len(rest) == 0 {
				return RunnerArgs{}, fmt.Errorf("--%s has no value", name)
			}
			value, rest = rest[0], rest[1:]
		}
		switch name {
		case "url":
			ra.URL = value
		case "uuid":
			ra.UUID = value
		case "token-url":
			ra.TokenURL = value
		case "label":
			ra.Labels = append(ra.Labels, value)
		case "handle":
			ra.Handle = value
		default:
			return RunnerArgs{}, fmt.Errorf("unknown flag --%s", name)
		}
	}
	if ra.URL == "" || ra.UUID == "" || ra.TokenURL == "" {
		return RunnerArgs{}, fmt.Errorf("--url, --uuid and --token-url are required, got %q", argv)
	}
	return ra, nil
}

// resolveTokenSecret finds the Secret key behind ra.TokenURL: the runner container's mount that
// holds the file, its Secret volume, and the item (or, without items, the key of that name).
func resolveTokenSecret(pod *corev1.Pod, c *corev1.Container, ra *RunnerArgs) error {
	p, ok := strings.CutPrefix(ra.TokenURL, tokenURLFilePrefix)
	if !ok {
		return fmt.Errorf("--token-url %q is not a file: URL", ra.TokenURL)
	}
	// "file:///etc/x" and "file:/etc/x" name the same file.
	p = "/" + strings.TrimLeft(p, "/")
	ra.TokenPath = path.Clean(p)

	var mount *corev1.VolumeMount
	var rel string
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		dir := path.Clean(m.MountPath)
		r, ok := strings.CutPrefix(ra.TokenPath, dir+"/")
		// The deepest mount holding the file is the one the runner sees.
		if ok && (mount == nil || len(dir) > len(path.Clean(mount.MountPath))) {
			mount, rel = m, r
		}
	}
	if mount == nil {
		return fmt.Errorf("no volume of container %s is mounted at the token file %s", c.Name, ra.TokenPath)
	}
	if mount.SubPath != "" || mount.SubPathExpr != "" {
		return fmt.Errorf("token mount %q uses a subPath, which this parser does not follow", mount.Name)
	}
	var secret *corev1.SecretVolumeSource
	for i := range pod.Spec.Volumes {
		if v := &pod.Spec.Volumes[i]; v.Name == mount.Name {
			secret = v.Secret
			break
		}
	}
	if secret == nil {
		return fmt.Errorf("token file %s is not on a Secret volume (mount %q)", ra.TokenPath, mount.Name)
	}
	ra.TokenSecretName = secret.SecretName
	if len(secret.Items) == 0 {
		ra.TokenSecretKey = rel
		return nil
	}
	for _, item := range secret.Items {
		if path.Clean(item.Path) == rel {
			ra.TokenSecretKey = item.Key
			return nil
		}
	}
	return fmt.Errorf("secret volume %q has no item at %s", mount.Name, rel)
}
