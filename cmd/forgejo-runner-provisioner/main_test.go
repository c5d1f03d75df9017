package main

import (
	"os"
	"strings"
	"testing"
)

// Bad flags are refused before anything starts, with a message that names what to fix.
func TestParseRefusesBadFlags(t *testing.T) {
	good := []string{"-tls-cert", "c.pem", "-tls-key", "k.pem", "-tls-client-ca", "ca.pem", "-allowed-clients", "spiffe://x/op",
		"-memory-mib", "1024", "-state-dir", "/var/lib/p/state"}
	if _, err := parse(good); err != nil {
		t.Fatalf("good flags refused: %v", err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-memory-mib", "1024"}, "-tls-cert, -tls-key and -tls-client-ca are required"},
		{append(good[:6:6], "-memory-mib", "1024"), "-allowed-clients is required"},
		{append(good, "-driver", "cloud-hypervisor"), `-driver "cloud-hypervisor"`},
		{append(good, "-qemu-forward", "10.0.2.100:3000=127.0.0.1:3000"), "-qemu-forward needs -driver qemu"},
		{append(good, "-memory-mib", "0"), "-memory-mib must be above zero"},
		{append(good, "-jailer", "/usr/bin/jailer"), "-jailer-uid and -jailer-gid"},
		{append(good, "-event-log-fsync", "sometimes"), "-event-log-fsync"},
		{append(good, "-event-log-max-files", "0"), "-event-log-max-files at least 1"},
		{append(good, "-event-log-path", "/var/lib/p/state/events.jsonl"), "must not be inside -state-dir"},
		{append(good, "-qemu-forward", "nonsense"), "want GUEST=HOST"},
		{append(good, "-jailer-netns", "forgejo-vms"), "-jailer-netns must be an absolute path"},
		{append(good, "-vm-log-max-mib", "-1"), "-vm-log-max-mib must be 0 or more"},
		{append(good, "-tap-prefix", "frtap"), "-tap-prefix and -tap-subnet go together"},
		{append(good, "-tap-prefix", "frtap", "-tap-subnet", "172.30.0.0/30"), "-tap-subnet: guest subnet"},
	} {
		_, err := parse(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parse(%q) = %v; want an error containing %q", tc.args, err, tc.want)
		}
	}
}

// The sample systemd unit's command line is one this binary accepts, and the unit keeps the
// VMs alive across a restart of the provisioner (which adopts them).
func TestSystemdUnitStaysInStepWithTheFlags(t *testing.T) {
	data, err := os.ReadFile("../../config/provisioner/forgejo-runner-provisioner.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := strings.ReplaceAll(string(data), "\\\n", " ")
	var exec []string
	keys := map[string]string{}
	for _, line := range strings.Split(unit, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		keys[k] = v
		if k == "ExecStart" {
			exec = strings.Fields(v)
		}
	}
	if len(exec) < 2 || !strings.HasSuffix(exec[0], "/forgejo-runner-provisioner") {
		t.Fatalf("ExecStart = %q", exec)
	}
	if _, err := parse(exec[1:]); err != nil {
		t.Errorf("the unit's flags are refused: %v", err)
	}
	if keys["KillMode"] != "process" {
		t.Errorf("KillMode=%q: stopping the service would kill the VMs it should adopt after a restart", keys["KillMode"])
	}
}
