package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestVersionFlagPrintsTheStampedVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--version"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.HasPrefix(out.String(), "forgejo-runner-operator v") {
		t.Fatalf("version line %q", out.String())
	}
}

func TestBadFlagsAreRefusedBeforeStart(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--log-level=loud"}, "--log-level must be debug, info or error"},
		{[]string{"--poll-interval=10ms"}, "--poll-interval must be at least 1s"},
		{[]string{"--leader-election-lease-duration=5s", "--leader-election-renew-deadline=10s"}, "lease-duration > renew-deadline"},
		{[]string{"--health-probe-bind-address=0"}, "--health-probe-bind-address must be set"},
		{[]string{"--no-such-flag"}, "flag provided but not defined"},
		{[]string{"--event-log-fsync=sometimes"}, "--event-log-fsync"},
		{[]string{"--gc-interval=10ms"}, "--gc-interval must be at least 1s"},
		{[]string{"--event-log-max-size=lots"}, "--event-log-max-size must be a size"},
		{[]string{"--event-log-max-files=0"}, "--event-log-max-files must be at least 1"},
		{[]string{"--event-log-path=/x", "--audit-log-path=/x"}, "must be different files"},
	}
	for _, c := range cases {
		var out, errOut bytes.Buffer
		if code := run(c.args, &out, &errOut); code != 2 {
			t.Errorf("%v: exit %d, want 2", c.args, code)
		}
		if !strings.Contains(errOut.String(), c.want) {
			t.Errorf("%v: stderr %q lacks %q", c.args, errOut.String(), c.want)
		}
	}
}
