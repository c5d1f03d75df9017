// Package forgejo is the operator's client of the Forgejo 15 REST API: runner registration,
// listing, lookup and deletion in one scope (instance, organization, repository or user), the
// waiting/running jobs list, and the server version.
//
// Errors are typed so that callers can decide without parsing strings (see [APIError],
// [ErrNotFound], [ErrScopeNotVisible], [ErrRetryable], [RetryAfter]). Forgejo 15 answers 404 both
// for what does not exist and for what the token may not see; [Client.ClassifyNotFound] tells the
// two apart before anything is recreated. The API token, and runner tokens the client has seen,
// never appear in an error string or a metric label.
//
// The client does not retry: reconcilers requeue, and a retry loop hidden here would stack with
// theirs.
package forgejo
