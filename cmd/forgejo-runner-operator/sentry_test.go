package main

import (
	"bytes"
	"flag"
	"io"
	"strings"
	"testing"
)

func TestSentryFlagsFallBackToTheEnvironment(t *testing.T) {
	parse := func(args ...string) options {
		var o options
		fs := flag.NewFlagSet(binaryName, flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		o.bind(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return o
	}
	t.Setenv("SENTRY_DSN", "")
	t.Setenv("SENTRY_ENVIRONMENT", "")
	if o := parse(); o.errReport().DSN != "" || o.validateSentry() != nil {
		t.Errorf("reporting is on by default: %+v", o.errReport())
	}

	t.Setenv("SENTRY_DSN", "https://envkey@glitchtip.example/3")
	t.Setenv("SENTRY_ENVIRONMENT", "staging")
	fromEnv := parse()
	if got := fromEnv.errReport(); got.DSN != "https://envkey@glitchtip.example/3" || got.Environment != "staging" {
		t.Errorf("from the environment: %+v", got)
	}
	fromFlags := parse("--sentry-dsn=https://flagkey@sentry.example/1", "--sentry-environment=prod-eu")
	got := fromFlags.errReport()
	if got.DSN != "https://flagkey@sentry.example/1" || got.Environment != "prod-eu" {
		t.Errorf("flags should win over the environment: %+v", got)
	}
}

func TestABadSentryDSNIsRefusedWithoutQuotingIt(t *testing.T) {
	for _, env := range []string{"", "not-a-dsn-secretkey"} {
		t.Setenv("SENTRY_DSN", env)
		args := []string{"--sentry-dsn=not-a-dsn-secretkey"}
		if env != "" {
			args = nil
		}
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 2 {
			t.Errorf("env %q: exit %d, want 2", env, code)
		}
		if !strings.Contains(errOut.String(), "--sentry-dsn or SENTRY_DSN: invalid Sentry DSN") || strings.Contains(errOut.String(), "secretkey") {
			t.Errorf("env %q: stderr %q", env, errOut.String())
		}
	}
}
