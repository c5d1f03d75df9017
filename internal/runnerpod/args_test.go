package runnerpod

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
)

func TestParseRunnerArgsRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		pool   *v1alpha1.RunnerPool
		runner *v1alpha1.Runner
		want   RunnerArgs
	}{
		{
			name: "default", pool: pool(), runner: runner(),
			want: RunnerArgs{
				Subcommand: "one-job", URL: testURL, UUID: testUUID,
				TokenURL: "file:/etc/forgejo-runner/token", TokenPath: "/etc/forgejo-runner/token",
				TokenSecretName: testRunner + "-token", TokenSecretKey: "token",
				Labels: []string{testLabel}, Wait: true,
			},
		},
		{
			name: "full pool with handle", pool: fullPool(), runner: runner(withHandle("h-1")),
			want: RunnerArgs{
				Subcommand: "one-job", URL: testURL, UUID: testUUID,
				TokenURL: "file:/etc/forgejo-runner/token", TokenPath: "/etc/forgejo-runner/token",
				TokenSecretName: testRunner + "-token", TokenSecretKey: "token",
				Labels: fullPool().Spec.Labels, Handle: "h-1", Wait: true,
			},
		},
		{
			name: "values that look like flags",
			pool: pool(func(p *v1alpha1.RunnerPool) {
				p.Spec.Forgejo.URL = "https://forgejo.example.com/sub/path"
				p.Spec.Labels = []string{"--wait", "a=b:host"}
			}),
			runner: runner(withHandle("--label=x")),
			want: RunnerArgs{
				Subcommand: "one-job", URL: "https://forgejo.example.com/sub/path", UUID: testUUID,
				TokenURL: "file:/etc/forgejo-runner/token", TokenPath: "/etc/forgejo-runner/token",
				TokenSecretName: testRunner + "-token", TokenSecretKey: "token",
				Labels: []string{"--wait", "a=b:host"}, Handle: "--label=x", Wait: true,
			},
		},
		{
			name:   "persistent",
			pool:   pool(withDinD(v1alpha1.DinDNone)),
			runner: runner(func(r *v1alpha1.Runner) { r.Spec.Mode = v1alpha1.ModePersistent }),
			want: RunnerArgs{
				Subcommand: "daemon", URL: testURL, UUID: testUUID,
				TokenURL: "file:/etc/forgejo-runner/token", TokenPath: "/etc/forgejo-runner/token",
				TokenSecretName: testRunner + "-token", TokenSecretKey: "token",
				Labels: []string{testLabel},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRunnerArgs(mustBuildPod(t, tt.pool, tt.runner))
			if err != nil {
				t.Fatalf("ParseRunnerArgs: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// Pods edited by hand or by a later BuildPod may spell the same command differently.
func TestParseRunnerArgsSpellings(t *testing.T) {
	base := mustBuildPod(t, pool(), runner())
	want, err := ParseRunnerArgs(base)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		command []string
		args    []string
		tweak   func(*corev1.Pod)
	}{
		{
			name:    "program in command under an init",
			command: []string{"/usr/bin/dumb-init", "--", "/bin/forgejo-runner"},
			args:    []string{"one-job", "--url", testURL, "--uuid", testUUID, "--token-url", "file:/etc/forgejo-runner/token", "--label", testLabel, "--wait=true"},
		},
		{
			name: "file URL with three slashes and a secret volume without items",
			args: []string{"forgejo-runner", "one-job", "--url=" + testURL, "--uuid=" + testUUID, "--token-url=file:///etc/forgejo-runner/token", "--label=" + testLabel, "--wait"},
			tweak: func(p *corev1.Pod) {
				volume(p, volumeToken).Secret.Items = nil
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := base.DeepCopy()
			pod.Spec.Containers[0].Command, pod.Spec.Containers[0].Args = tt.command, tt.args
			if tt.tweak != nil {
				tt.tweak(pod)
			}
			got, err := ParseRunnerArgs(pod)
			if err != nil {
				t.Fatalf("ParseRunnerArgs: %v", err)
			}
			got.TokenURL = want.TokenURL
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseRunnerArgsErrors(t *testing.T) {
	base := mustBuildPod(t, pool(), runner())
	args := base.Spec.Containers[0].Args
	tests := []struct {
		name  string
		tweak func(*corev1.Pod)
		want  string
	}{
		{"no runner container", func(p *corev1.Pod) { p.Spec.Containers[0].Name = "other" }, "no container"},
		{"no program", func(p *corev1.Pod) { p.Spec.Containers[0].Args = []string{"sh", "-c", "sleep 1"} }, "not found"},
		{"unknown subcommand", func(p *corev1.Pod) { p.Spec.Containers[0].Args = []string{"forgejo-runner", "register"} }, "not followed"},
		{"unknown flag", func(p *corev1.Pod) { p.Spec.Containers[0].Args = append(append([]string{}, args...), "--config=x") }, "unknown flag --config"},
		{"positional", func(p *corev1.Pod) { p.Spec.Containers[0].Args = append(append([]string{}, args...), "extra") }, "unexpected argument"},
		{"missing value", func(p *corev1.Pod) { p.Spec.Containers[0].Args = append(append([]string{}, args...), "--handle") }, "no value"},
		{"bad wait", func(p *corev1.Pod) { p.Spec.Containers[0].Args = append(append([]string{}, args...), "--wait=maybe") }, "boolean"},
		{"missing uuid", func(p *corev1.Pod) { p.Spec.Containers[0].Args = dropPrefixed(args, "--uuid=") }, "required"},
		{"token not a file URL", func(p *corev1.Pod) {
			p.Spec.Containers[0].Args = replacePrefixed(args, "--token-url=", "https://x/token")
		}, "not a file: URL"},
		{"token outside any mount", func(p *corev1.Pod) {
			p.Spec.Containers[0].Args = replacePrefixed(args, "--token-url=", "file:/tmp/token")
		}, "no volume"},
		{"token on a non-secret volume", func(p *corev1.Pod) {
			p.Spec.Containers[0].Args = replacePrefixed(args, "--token-url=", "file:/data/token")
		}, "not on a Secret volume"},
		{"token file not an item", func(p *corev1.Pod) {
			p.Spec.Containers[0].Args = replacePrefixed(args, "--token-url=", "file:/etc/forgejo-runner/other")
		}, "no item"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := base.DeepCopy()
			tt.tweak(pod)
			_, err := ParseRunnerArgs(pod)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
	if _, err := ParseRunnerArgs(nil); err == nil {
		t.Error("nil pod parsed")
	}
}

func dropPrefixed(args []string, prefix string) []string {
	var out []string
	for _, a := range args {
		if !strings.HasPrefix(a, prefix) {
			out = append(out, a)
		}
	}
	return out
}

func replacePrefixed(args []string, prefix, value string) []string {
	out := append([]string{}, args...)
	for i, a := range out {
		if strings.HasPrefix(a, prefix) {
			out[i] = prefix + value
		}
	}
	return out
}
