package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
)

// chainPoll is the chain path's --poll-interval: long enough that a chain which finishes in
// seconds was moved by webhooks and runner ends, never by the periodic poll.
const chainPoll = 10 * time.Minute

// chainBound is how long one chain may take before the run is called stuck. A chain whose next
// job no trigger announced would wait for the 10-minute poll; this says so sooner.
const chainBound = 2 * time.Minute

// chainJobs is one run of the chain path: build, then test once build succeeded, then deploy.
var chainJobs = []forgejosim.RunJobSpec{
	{Name: "build", RunsOn: []string{"docker"}},
	{Name: "test", RunsOn: []string{"docker"}, Needs: []string{"build"}},
	{Name: "deploy", RunsOn: []string{"docker"}, Needs: []string{"test"}},
}

// chainRun is the chain path while it runs.
type chainRun struct {
	st   *stage
	runs []forgejosim.Run

	opStart, opEnd   procStats
	apiStart, apiEnd apiSnapshot
	complete         bool
}

// runChains runs -chains runs of chainJobs one after the other through an operator of its own
// that receives the simulator's deliveries and polls every chainPoll, and deletes the pool
// afterwards.
func (e *env) runChains(ctx context.Context) (res *results, err error) {
	st, err := e.startStage(ctx, pathChain, chainPoll, true)
	if err != nil {
		return nil, err
	}
	defer st.close()
	// Before its first poll the operator may not have taken the pool's connection up, and a
	// push then finds nothing to poll: that job would wait the whole 10 minutes. No poll phase
	// is waited for (it would be 5 minutes); each run waits for quiet instead.
	if err := waitForFirstPoll(ctx, e.counter, st.before.JobsPolls, st.op); err != nil {
		return nil, err
	}
	c := &chainRun{st: st}
	if c.opStart, err = operatorStats(st.op); err != nil {
		return nil, err
	}
	c.apiStart = e.counter.snapshot()
	runErr := e.chains(ctx, c)
	if runErr == nil {
		c.complete = true
		if c.opEnd, err = operatorStats(st.op); err != nil {
			return nil, err
		}
	}
	res, err = e.chainResults(c)
	if err != nil {
		return nil, errors.Join(runErr, err)
	}
	if runErr != nil {
		ids := []forgejosim.Job{}
		for _, r := range c.runs {
			ids = append(ids, r.Jobs...)
		}
		logf("where it got to: %s", diagnose(e.sim, e.cluster, st.ns, ids))
		logf("operator log: %s (%s)", st.op.LogPath, summarizeLog(st.op.LogPath))
		return res, runErr
	}
	return res, deletePool(ctx, e.cluster, st.pool)
}

// chains queues the runs one after the other, each once the previous one is done, nothing of
// its runners is left and the polls it caused are over, and at least a coalescing window after
// the latest jobs poll, so that its push's poll runs at once. The counters end once the last
// run's follow-up polls are over too, so every chain is charged the same polls.
func (e *env) chains(ctx context.Context, c *chainRun) error {
	var prevGone time.Time
	phase := jobwatch.DefaultCoalesceWindow + settleMargin
	for i := range e.cfg.chains {
		if err := waitQueueTime(ctx, e.counter, quietAfter(prevGone), phase); err != nil {
			return err
		}
		run, err := e.sim.QueueRun(forgejosim.QueueRunRequest{
			Repo: benchRepo, Title: fmt.Sprintf("bench chain %d", i+1), Workflow: "chain.yml", Jobs: chainJobs,
		})
		if err != nil {
			return fmt.Errorf("queue chain %d: %w", i+1, err)
		}
		c.runs = append(c.runs, run)
		ids := make([]int64, 0, len(run.Jobs))
		for _, j := range run.Jobs {
			ids = append(ids, j.ID)
		}
		gone, err := waitGone(ctx, e.sim, e.cluster, c.st.ns, c.st.pods, ids, chainBound)
		if err != nil {
			return fmt.Errorf("chain %d (run %d): %w", i+1, run.ID, err)
		}
		logf("%s path: chain %d of %d done", pathChain, i+1, e.cfg.chains)
		prevGone = gone
	}
	if err := sleep(ctx, time.Until(quietAfter(prevGone))); err != nil {
		return fmt.Errorf("wait for the last chain's follow-up polls: %w", err)
	}
	c.apiEnd = e.counter.snapshot()
	return nil
}
