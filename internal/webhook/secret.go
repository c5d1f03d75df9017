package webhook

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/go-logr/logr"
)

// TrimSecret removes one trailing newline, "\n" or "\r\n", from a secret read from a file or a
// Kubernetes Secret, and reports whether there was one. `echo secret > file`, an editor's
// final newline and `kubectl create secret generic --from-file` all keep it, while the secret
// typed into Forgejo's hook form cannot hold one (a single-line password input,
// templates/webhook/new/forgejo.tmpl at v15.0.3): kept, it would make every signature fail,
// silently. Only one is removed, so a secret that really ends in whitespace keeps the rest.
func TrimSecret(b []byte) ([]byte, bool) {
	if t, ok := bytes.CutSuffix(b, []byte("\r\n")); ok {
		return t, true
	}
	if t, ok := bytes.CutSuffix(b, []byte("\n")); ok {
		return t, true
	}
	return b, false
}

// ReadSecretFile reads a webhook secret from a file, trims one trailing newline and says so in
// the log (naming the file, never the secret). An empty secret is an error: an HMAC keyed with
// nothing authenticates nobody, and an operator-wide secret that is silently ignored would be
// worse than a refusal to start.
func ReadSecretFile(path string, log logr.Logger) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read webhook secret file: %w", err)
	}
	b, trimmed := TrimSecret(b)
	if trimmed {
		log.Info("webhook secret file ends in a newline; it was trimmed, as Forgejo's hook form cannot hold one", "file", path)
	}
	if len(b) == 0 {
		return nil, errors.New("webhook secret file " + path + " is empty")
	}
	return b, nil
}
