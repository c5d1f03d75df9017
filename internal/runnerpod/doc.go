// Package runnerpod builds the Kubernetes objects that run one Runner on the kubernetes backend:
// the Secret holding its Forgejo runner token and the Pod that runs `forgejo-runner one-job`
// (ephemeral) or `forgejo-runner daemon` (persistent), with a Docker daemon as a native sidecar
// when the pool's dind.mode asks for one (Rootless or Privileged).
//
// Every builder is a pure function of the RunnerPool and the Runner: no client, no clock, no
// randomness. The same inputs always give the same object, so the Runner reconciler can create,
// compare and re-create children by name without remembering how it built them, and tests can
// pin the whole shape. Input objects are never modified and never aliased by the output.
//
// [ParseRunnerArgs] reads a built pod back into the runner process's arguments, for test
// harnesses that play the runner inside pods no kubelet runs (kwok).
package runnerpod
