package runnerv1ext

import (
	"connectrpc.com/connect"
)

// FetchSingleTaskProcedure is the Connect procedure of Forgejo 15's FetchSingleTask: a method of
// runner.v1.RunnerService, although its messages live in this package (see the .proto file).
// Mount or call it under the instance's "/api/actions" prefix.
const FetchSingleTaskProcedure = "/runner.v1.RunnerService/FetchSingleTask"

// NewFetchSingleTaskClient returns a client of FetchSingleTask; baseURL is the runner protocol
// root, "<instance>/api/actions" (no trailing slash).
func NewFetchSingleTaskClient(httpClient connect.HTTPClient, baseURL string, opts ...connect.ClientOption) *connect.Client[FetchSingleTaskRequest, FetchSingleTaskResponse] {
	return connect.NewClient[FetchSingleTaskRequest, FetchSingleTaskResponse](httpClient, baseURL+FetchSingleTaskProcedure, opts...)
}
