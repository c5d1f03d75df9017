package forgejo_test

import (
	"testing"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
)

func TestParseScope(t *testing.T) {
	for _, tc := range []struct {
		scope, org, repo string
		want             forgejo.Scope
		wantErr          bool
	}{
		{scope: "global", want: forgejo.GlobalScope()},
		{scope: "user", want: forgejo.UserScope()},
		{scope: "organization", org: "acme", want: forgejo.OrganizationScope("acme")},
		{scope: "repository", repo: "acme/app.v2", want: forgejo.RepositoryScope("acme", "app.v2")},
		{scope: "instance", wantErr: true},
		{scope: "", wantErr: true},
		{scope: "Global", wantErr: true},
		{scope: "organization", wantErr: true},
		{scope: "organization", org: "acme/x", wantErr: true},
		{scope: "organization", org: "..", wantErr: true},
		{scope: "repository", repo: "acme", wantErr: true},
		{scope: "repository", repo: "acme/app/extra", wantErr: true},
		{scope: "repository", repo: "/app", wantErr: true},
		{scope: "repository", repo: "acme/a pp", wantErr: true},
		{scope: "global", org: "acme", wantErr: true},
		{scope: "organization", org: "acme", repo: "acme/app", wantErr: true},
		{scope: "user", repo: "acme/app", wantErr: true},
	} {
		got, err := forgejo.ParseScope(tc.scope, tc.org, tc.repo)
		if (err != nil) != tc.wantErr || (err == nil && got != tc.want) {
			t.Errorf("ParseScope(%q, %q, %q) = %+v, %v", tc.scope, tc.org, tc.repo, got, err)
		}
	}
	if s := forgejo.RepositoryScope("acme", "app").String(); s != "repository acme/app" {
		t.Errorf("String() = %q", s)
	}
}
