// Package forgejosim is an in-memory stand-in for a Forgejo 15 instance, for tests and demos.
//
// It serves the part of Forgejo the operator and a simulated runner speak to, and follows the
// project's Forgejo 15 reference notes; where those notes were checked against Forgejo's source,
// the comment beside the code says where:
//
//   - the REST API under /api/v1: version, runner registration, listing, reading and deletion for
//     the instance, organization, repository and user scopes, and the waiting/running jobs list;
//   - the runner protocol (Connect RPC) under /api/actions: Ping, Declare, FetchTask,
//     FetchSingleTask (Forgejo 15, by job handle), UpdateTask and UpdateLog;
//   - Actions job webhooks (workflow_job_*), signed like Forgejo signs them;
//   - a control API under /_sim/ (queue, cancel and complete jobs, configure hooks, mint API tokens,
//     inject faults, read the whole state), also callable as methods on [Server].
//
// It is not a product: nothing is persisted, and access control is a simplified model of
// Forgejo's (see [Scope]).
package forgejosim
