// Package forgejosim is an in-memory stand-in for a Forgejo v15.0.3 instance, for tests and demos.
//
// It behaves as Forgejo v15.0.3 does, as read in Forgejo's own source (each behaviour cites the
// file it comes from), and every REST answer its tests see is held to Forgejo's own API
// description (../shared/forgejo/forgejo-api-v15.0.3.swagger.json):
//
//   - the REST API under /api/v1: version, runner registration, listing (last_online order,
//     offset paging, Link and X-Total-Count, visible), reading and deletion for the instance,
//     organization, repository and user scopes, and the waiting/running jobs list; 404 for what a
//     token may not see, 403 for what it may see but not do (see [Scope]);
//   - the runner protocol (Connect RPC) under /api/actions: Ping, Declare, FetchTask,
//     FetchSingleTask (Forgejo 15, by job handle), UpdateTask and UpdateLog, with per-scope
//     tasks versions, runner status from task reports, and ephemeral runners deleted after their
//     task;
//   - workflow runs of one or more jobs: needs (blocked jobs released or skipped when their needs
//     end, with no webhook), run-level concurrency groups that hold waiting jobs;
//   - webhooks as Forgejo 15 sends them: a push delivery for each queued run and
//     action_run_success or action_run_failure when a run ends, signed and with Forgejo's headers,
//     sent once. Forgejo 15 has no per-job event; Options.JobEvents makes the simulator a newer
//     server that also sends workflow_job_* events. Options.DeliveryRaceProbability makes a push
//     arrive before its jobs are listed;
//   - a control API under /_sim/ (queue runs and jobs, cancel and complete jobs, configure hooks,
//     mint API tokens, inject faults, read the whole state), also callable as methods on [Server].
//
// It is not a product: nothing is persisted, repositories are private and have Actions enabled,
// and users, roles and token scopes are folded into [Scope].
package forgejosim
