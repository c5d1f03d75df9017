package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseFlagsSoak(t *testing.T) {
	cfg, err := parseFlags(strings.Fields("-paths soak"))
	if err != nil || !slices.Equal(cfg.paths, []string{pathSoak}) {
		t.Fatalf("-paths soak: %q, %v", cfg.paths, err)
	}
	if cfg.soak != 30*time.Minute || cfg.soakRestart != 5*time.Minute {
		t.Errorf("defaults: soak %s, restart every %s", cfg.soak, cfg.soakRestart)
	}
	if want := cfg.soak + soakSettle + 5*time.Minute; cfg.timeout != want {
		t.Errorf("timeout %s, want %s: the default 10m would end a 30-minute soak", cfg.timeout, want)
	}
	cfg, err = parseFlags(strings.Fields("-paths soak -soak 5m -timeout 7m"))
	if err != nil || cfg.timeout != 7*time.Minute {
		t.Errorf("an explicit -timeout is kept: %s, %v", cfg.timeout, err)
	}
	for _, bad := range []string{"-paths poll,soak", "-paths soak,scale", "-paths soak -soak 10s", "-paths soak -soak-restart 1s"} {
		if _, err := parseFlags(strings.Fields(bad)); err == nil {
			t.Errorf("parseFlags(%q) took it", bad)
		}
	}
	if slices.Contains(mustParse(t).paths, pathSoak) {
		t.Error("the soak path is among the defaults")
	}
}

func mustParse(t *testing.T, args ...string) config {
	t.Helper()
	cfg, err := parseFlags(args)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func balanced() *soakResults {
	return &soakResults{
		Runs: 3, Jobs: 4, JobsSucceeded: 4, RunnersMade: 4, RunnersForJobs: 4, Registrations: 4,
		PoolOfRepo: map[string]map[string]int{
			"acme/app": {"soak-repo": 2}, "acme/lib": {"soak-org": 1}, "zeta/tool": {"soak-global": 1},
		},
	}
}

func TestSoakBooksBalanceOnlyWhenEverythingAddsUp(t *testing.T) {
	ok := balanced()
	ok.check()
	if len(ok.Failures) > 0 {
		t.Fatalf("balanced books failed: %v", ok.Failures)
	}
	for name, spoil := range map[string]func(*soakResults){
		"a job not done":                 func(r *soakResults) { r.JobsNotDone, r.JobsSucceeded = 1, 3 },
		"a job run twice":                func(r *soakResults) { r.JobsRunTwice = 1 },
		"a job with two Runners":         func(r *soakResults) { r.HandlesTwice, r.RunnersMade, r.Registrations = 1, 5, 5 },
		"a runner more than jobs":        func(r *soakResults) { r.RunnersMade, r.Registrations = 5, 5 },
		"a registration more":            func(r *soakResults) { r.Registrations = 5 },
		"a registration left":            func(r *soakResults) { r.LeftRegs = 1 },
		"a pod left":                     func(r *soakResults) { r.LeftInCluster = "0 Runners, 1 pods, 0 token Secrets" },
		"a wider pool served":            func(r *soakResults) { r.PoolOfRepo["acme/app"] = map[string]int{"soak-repo": 1, "soak-global": 1} },
		"an organization repo by global": func(r *soakResults) { r.PoolOfRepo["acme/lib"] = map[string]int{"soak-global": 1} },
	} {
		r := balanced()
		spoil(r)
		r.check()
		if len(r.Failures) == 0 {
			t.Errorf("%s: the books balanced", name)
		}
	}
}
