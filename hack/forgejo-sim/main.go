// Command forgejo-sim serves the in-memory Forgejo 15 simulator (internal/forgejosim) for demos
// and for tests that run outside Go.
//
//	go run ./hack/forgejo-sim --addr 127.0.0.1:3000 --admin-token T
//
// It prints the URL it listens on (useful with --addr 127.0.0.1:0) and stops cleanly on SIGINT or
// SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "forgejo-sim:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:3000", "listen address; port 0 picks a free port")
	adminToken := flag.String("admin-token", "", "admin token for the /_sim/ control API and the instance-scope API (random if empty)")
	version := flag.String("version", forgejosim.DefaultVersion, "Forgejo version to report and behave as (e.g. 11.0.0 has no registration API)")
	publicURL := flag.String("public-url", "", "root URL used in links and payloads (default: the listen URL)")
	seed := flag.Uint64("seed", 0, "non-zero: reproducible ids, tokens and handles")
	hookAttempts := flag.Int("webhook-attempts", 1, "delivery attempts per webhook event (Forgejo never retries: 1)")
	jobEvents := flag.Bool("job-events", false, "behave as a newer server (Gitea 1.24+, a later Forgejo) that also sends workflow_job_* webhooks; Forgejo 15 never sends them")
	raceProbability := flag.Float64("delivery-race", 0, "probability (0..1) that a run's push delivery is sent before its jobs are listed (seeded by --seed)")
	raceDelay := flag.Duration("delivery-race-delay", 200*time.Millisecond, "how long a raced run's jobs stay unlisted")
	verbose := flag.Bool("v", false, "log deliveries and injected faults")
	flag.Parse()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	url := "http://" + ln.Addr().String()
	if *publicURL == "" {
		*publicURL = url
	}
	opts := forgejosim.Options{
		AdminToken:         *adminToken,
		Version:            *version,
		PublicURL:          *publicURL,
		Seed:               *seed,
		WebhookMaxAttempts: *hookAttempts,
		JobEvents:          *jobEvents,

		DeliveryRaceProbability: *raceProbability,
		DeliveryRaceDelay:       *raceDelay,
	}
	if *raceProbability < 0 || *raceProbability > 1 {
		return fmt.Errorf("--delivery-race %v: want a probability within 0..1", *raceProbability)
	}
	if *verbose {
		opts.Logf = log.Printf
	}
	sim := forgejosim.New(opts)
	defer sim.Close()

	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	fmt.Printf("forgejo-sim %s listening on %s\n", *version, url)
	if *adminToken == "" {
		fmt.Printf("admin token: %s\n", sim.AdminToken())
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}
