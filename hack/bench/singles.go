package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jobwatch"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/cluster"
)

// settleMargin is added to the operator's follow-up delays before the next job is queued, so
// that a follow-up poll running late is not mistaken for the next job's.
const settleMargin = 500 * time.Millisecond

// quietAfter is when the polls that the previous job (or run) can still cause are over, given
// the moment nothing of its runners was left (gone). Its push came before that, and so did its
// runners' ends and its run's end delivery (action_run_*, sent as its last job ends); the pool
// asks for the runner-end poll before it deletes the Runner. Each of these asks for follow-up
// polls, the longest after a delivery. A job queued before then would share a poll with them,
// and its figure would tell of the coalescing, not of the path.
func quietAfter(gone time.Time) time.Time {
	longest := max(slices.Max(jobwatch.DefaultFollowUps), slices.Max(jobwatch.DefaultRunnerEndFollowUps))
	return gone.Add(longest + settleMargin)
}

// queueTime is when to queue the next job: once quiet, and no sooner than phase after the
// operator's latest jobs poll (lastPoll).
func queueTime(quiet, lastPoll time.Time, phase time.Duration) time.Time {
	return later(quiet, lastPoll.Add(phase))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// waitQueueTime sleeps until quiet, then until phase after the latest jobs poll: the latest is
// read only once quiet, since the follow-ups are polls too.
func waitQueueTime(ctx context.Context, counter *apiCounter, quiet time.Time, phase time.Duration) error {
	if err := sleep(ctx, time.Until(quiet)); err != nil {
		return fmt.Errorf("wait for the previous job's follow-up polls: %w", err)
	}
	at := queueTime(quiet, counter.snapshot().LastJobsPoll, phase)
	if err := sleep(ctx, time.Until(at)); err != nil {
		return fmt.Errorf("wait for the poll phase: %w", err)
	}
	return nil
}

// runSingles queues -singles jobs one at a time, each once the previous one is done, nothing of
// its runner is left and the operator's follow-up polls are over, and half a poll interval after
// the latest jobs poll, as the burst was: so a single job meets an idle operator, and on the poll
// path waits the average half interval for its poll.
func (b *burst) runSingles(ctx context.Context, path string) error {
	prevGone := b.gone
	bound := b.cfg.poll + 2*time.Minute
	var start apiSnapshot
	for i := range b.cfg.singles {
		if err := waitQueueTime(ctx, b.counter, quietAfter(prevGone), b.cfg.poll/2); err != nil {
			return err
		}
		if i == 0 {
			start = b.counter.snapshot()
		}
		queued, err := b.sim.QueueJobs(forgejosim.QueueJobsRequest{Repo: benchRepo, RunsOn: []string{"docker"}})
		if err != nil {
			return fmt.Errorf("queue single job %d: %w", i+1, err)
		}
		j := queued[0]
		b.singles = append(b.singles, j)
		gone, err := waitGone(ctx, b.sim, b.cluster, b.ns, b.pods, []int64{j.ID}, bound)
		if err != nil {
			return fmt.Errorf("single job %d (id %d): %w", i+1, j.ID, err)
		}
		logf("%s path: single job %d of %d done", path, i+1, b.cfg.singles)
		prevGone = gone
	}
	// Every poll from the first job's queueing until the last one's follow-ups are over: the
	// waits between the jobs end before the next periodic poll is due, so each poll counted was
	// caused by a single job.
	if err := sleep(ctx, time.Until(quietAfter(prevGone))); err != nil {
		return fmt.Errorf("wait for the last single job's follow-up polls: %w", err)
	}
	b.singlesPolls = b.counter.snapshot().JobsPolls - start.JobsPolls
	return nil
}

// waitGone waits until every job of ids is done in Forgejo, no registration is left, no Runner,
// runner pod or token Secret is left in ns and the pod watch has seen the pods go; it returns
// that moment. It gives up after bound.
func waitGone(ctx context.Context, sim *forgejosim.Server, c *cluster.Cluster, ns string, pods *podObserver, ids []int64, bound time.Duration) (time.Time, error) {
	deadline := time.Now().Add(bound)
	for {
		done := 0
		for _, id := range ids {
			if j, ok := sim.Job(id); ok && j.Status.Done() {
				done++
			}
		}
		if done == len(ids) && len(sim.State().Runners) == 0 && pods.live() == 0 {
			left, err := leftInCluster(ctx, c, ns)
			if err != nil {
				return time.Time{}, err
			}
			if left == "" {
				return time.Now(), nil
			}
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("not done with nothing of its runners left within %s: %d of %d jobs done", bound, done, len(ids))
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return time.Time{}, fmt.Errorf("wait for %d jobs to be done and their runners gone (%d are done): %w", len(ids), done, err)
		}
	}
}
