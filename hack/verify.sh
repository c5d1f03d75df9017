#!/usr/bin/env bash
# Fails when a generated file differs from what `make generate` makes of the sources, when Go
# code is unformatted, or when a go.mod is untidy. Files are compared before and after
# regeneration, so the check works on a dirty tree too; on failure the regenerated files are
# left in place, ready to commit.
set -euo pipefail
cd "$(dirname "$0")/.."

generated() {
  git ls-files --cached --others --exclude-standard -- \
    'api/**/zz_generated*.go' 'config/crd/**' 'config/rbac/role.yaml' 'internal/runnerpb/**' 'internal/provisionerpb/**' \
    | sort | xargs -r sha256sum
}

status=0
before=$(generated)
make --no-print-directory generate >/dev/null
after=$(generated)
if [ "$before" != "$after" ]; then
  echo "verify: generated files were stale; 'make generate' has updated them, commit the result:" >&2
  diff <(echo "$before") <(echo "$after") | grep '^[<>]' | awk '{print "  " $3}' | sort -u >&2
  status=1
fi

unformatted=$(gofmt -l $(git ls-files '*.go') 2>&1 || true)
if [ -n "$unformatted" ]; then
  echo "verify: gofmt would change:" >&2
  echo "$unformatted" | sed 's/^/  /' >&2
  status=1
fi

for mod in . hack/kube hack/etcd hack/kwok hack/tools/*/; do
  [ -f "$mod/go.mod" ] || continue
  if ! (cd "$mod" && go mod tidy -diff >/dev/null 2>&1); then
    echo "verify: $mod/go.mod is not tidy; run 'go mod tidy' there:" >&2
    (cd "$mod" && go mod tidy -diff 2>&1 | head -20 | sed 's/^/  /') >&2 || true
    status=1
  fi
done
exit $status
