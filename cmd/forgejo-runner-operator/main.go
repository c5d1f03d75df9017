// Command forgejo-runner-operator reconciles RunnerPools and Runners: it gives a Forgejo
// instance CI runners on demand.
package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	forgejov1alpha1 "git.brooktrails.org/brooktrails/forgejo-runner-operator/api/v1alpha1"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/controller/runner"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/errreport"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/jsonlog"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/operator"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/version"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/webhook"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/webhookforward"
)

const binaryName = "forgejo-runner-operator"

// options gathers every flag of the binary; validate runs before anything starts.
type options struct {
	kubeconfig           string
	metricsAddr          string
	metricsSecure        bool
	probeAddr            string
	leaderElect          bool
	leaderElectionNS     string
	leaderElectionID     string
	leaseDuration        time.Duration
	renewDeadline        time.Duration
	retryPeriod          time.Duration
	watchNamespace       string
	pollInterval         time.Duration
	gcInterval           time.Duration
	webhookAddr          string
	webhookSecretFile    string
	showVersion          bool
	logLevel             string
	logDevelopmentFormat bool
	eventLogPath         string
	eventLogFsync        string
	eventLogMaxSize      string
	eventLogMaxFiles     int
	auditLogPath         string
	identity             string
	deregisterDeadline   time.Duration
	allowPrivilegedDinD  bool
	sentryDSN            string
	sentryEnvironment    string
	advertiseAddress     string
}

func (o *options) bind(fs *flag.FlagSet) {
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "Kubeconfig file to reach the cluster with (default: $KUBECONFIG, else the in-cluster service account).")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8443", "Address the /metrics endpoint serves on; \"0\" turns it off.")
	fs.BoolVar(&o.metricsSecure, "metrics-secure", true, "Serve /metrics over HTTPS, allowing only callers the cluster authorizes to get /metrics.")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address /healthz and /readyz serve on.")
	fs.BoolVar(&o.leaderElect, "leader-elect", true, "Elect a leader so that only one replica reconciles at a time.")
	fs.StringVar(&o.leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader election Lease (default: the pod's namespace).")
	fs.StringVar(&o.leaderElectionID, "leader-election-id", "forgejo-runner-operator.forgejo.brooktrails.org", "Name of the leader election Lease.")
	fs.DurationVar(&o.leaseDuration, "leader-election-lease-duration", 15*time.Second, "How long a leader's lease lasts without renewal.")
	fs.DurationVar(&o.renewDeadline, "leader-election-renew-deadline", 10*time.Second, "How long the leader keeps trying to renew before it gives up.")
	fs.DurationVar(&o.retryPeriod, "leader-election-retry-period", 2*time.Second, "How often candidates try to take the lease.")
	fs.StringVar(&o.watchNamespace, "watch-namespace", "", "Reconcile only RunnerPools in this namespace (default: all namespaces).")
	fs.DurationVar(&o.pollInterval, "poll-interval", 10*time.Second, "How often each Forgejo connection's waiting jobs are listed.")
	fs.DurationVar(&o.gcInterval, "gc-interval", 5*time.Minute, "How often each pool's Forgejo registrations are checked for orphans (marked as the pool's, held by no Runner); one is deleted when two checks in a row find it.")
	fs.DurationVar(&o.deregisterDeadline, "deregister-deadline", runner.DefaultDeregisterDeadline, "How long a Runner being deleted keeps trying to delete its Forgejo registration (its pod is deleted first) before it goes without: a Warning Event and forgejo_runner_operator_deregistrations_abandoned_total say so, and the pool's garbage collection deletes the registration later if the pool still exists.")
	fs.StringVar(&o.webhookAddr, "webhook-bind-address", ":9000", "Address the Forgejo webhook receiver serves "+operator.WebhookPath+" on; \"0\" turns it off.")
	fs.StringVar(&o.webhookSecretFile, "webhook-secret-file", "", "File holding the operator-wide webhook secret: a delivery it signs acts on every pool covering its repository (a pool's own spec.forgejo.webhookSecretRef acts on the pools holding it only). One trailing newline is trimmed.")
	fs.BoolVar(&o.showVersion, "version", false, "Print the version and exit.")
	fs.StringVar(&o.logLevel, "log-level", "info", "Log level: debug, info or error.")
	fs.BoolVar(&o.logDevelopmentFormat, "log-development-format", false, "Human-readable console logs instead of JSON.")
	fs.StringVar(&o.eventLogPath, "event-log-path", "", "Append every runner's lifecycle events to this JSON-lines file (its directory must exist; put it on a persistent volume). Empty: no file.")
	fs.StringVar(&o.eventLogFsync, "event-log-fsync", string(jsonlog.FsyncInterval), "When the event log is flushed to disk: always (every event), interval (every second) or never (left to the OS).")
	fs.StringVar(&o.eventLogMaxSize, "event-log-max-size", "100Mi", "Size at which the event log is rotated to FILE.1, FILE.2, ...; 0 never rotates.")
	fs.IntVar(&o.eventLogMaxFiles, "event-log-max-files", 5, "How many rotated event log files are kept.")
	fs.StringVar(&o.auditLogPath, "audit-log-path", "", "Append the tamper-evident audit log to this JSON-lines file (its directory must exist); check it with `"+binaryName+" audit verify FILE`. Empty: no audit log.")
	fs.BoolVar(&o.allowPrivilegedDinD, "allow-privileged-dind", false, "Let RunnerPools in every namespace run spec.dind.mode Privileged (a root Docker daemon in a privileged container, which any job can use to become root on its node). Without it, only namespaces labelled "+forgejov1alpha1.AllowPrivilegedDinDLabel+"=true may.")
	fs.StringVar(&o.advertiseAddress, "advertise-address", os.Getenv("POD_IP"), "IP other replicas reach this one's webhook receiver at (default $POD_IP): it goes into the leader election Lease, so that a replica that does not lead can forward the webhook deliveries it receives to the leader.")
	fs.StringVar(&o.identity, "operator-identity", "", "How the audit log names the operator (default: its Kubernetes user, from a SelfSubjectReview, and its host name).")
	fs.StringVar(&o.sentryDSN, "sentry-dsn", "", "Report reconcile errors and panics to this Sentry or GlitchTip project DSN (default: $SENTRY_DSN; empty: no reporting). Tokens and Forgejo's answers are scrubbed from every event.")
	fs.StringVar(&o.sentryEnvironment, "sentry-environment", "", "Environment of the reported events (default: $SENTRY_ENVIRONMENT, else "+errreport.DefaultEnvironment+").")
}

func (o *options) validate() error {
	var errs []error
	if o.probeAddr == "" || o.probeAddr == "0" {
		errs = append(errs, errors.New("--health-probe-bind-address must be set: the Deployment's probes need it"))
	}
	if o.leaderElect && (o.leaseDuration <= o.renewDeadline || o.renewDeadline <= o.retryPeriod || o.retryPeriod <= 0) {
		errs = append(errs, fmt.Errorf("leader election needs lease-duration > renew-deadline > retry-period > 0, got %s, %s, %s",
			o.leaseDuration, o.renewDeadline, o.retryPeriod))
	}
	if o.pollInterval < time.Second {
		errs = append(errs, fmt.Errorf("--poll-interval must be at least 1s, got %s", o.pollInterval))
	}
	if o.gcInterval < time.Second {
		errs = append(errs, fmt.Errorf("--gc-interval must be at least 1s, got %s", o.gcInterval))
	}
	if o.deregisterDeadline < time.Second {
		errs = append(errs, fmt.Errorf("--deregister-deadline must be at least 1s, got %s", o.deregisterDeadline))
	}
	if _, err := o.zapLevel(); err != nil {
		errs = append(errs, err)
	}
	if _, err := jsonlog.ParseFsyncPolicy(o.eventLogFsync); err != nil {
		errs = append(errs, fmt.Errorf("--event-log-fsync: %w", err))
	}
	if _, err := o.maxSize(); err != nil {
		errs = append(errs, err)
	}
	if o.eventLogMaxFiles < 1 {
		errs = append(errs, fmt.Errorf("--event-log-max-files must be at least 1, got %d", o.eventLogMaxFiles))
	}
	if o.eventLogPath != "" && o.eventLogPath == o.auditLogPath {
		errs = append(errs, errors.New("--event-log-path and --audit-log-path must be different files"))
	}
	if err := o.validateSentry(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (o *options) maxSize() (int64, error) {
	q, err := resource.ParseQuantity(o.eventLogMaxSize)
	if err != nil || q.Sign() < 0 {
		return 0, fmt.Errorf("--event-log-max-size must be a size such as 100Mi or 0, not %q", o.eventLogMaxSize)
	}
	return q.Value(), nil
}

// eventLog is the event log's configuration from the flags.
func (o *options) eventLog() jsonlog.Options {
	fsync, _ := jsonlog.ParseFsyncPolicy(o.eventLogFsync)
	size, _ := o.maxSize()
	return jsonlog.Options{Path: o.eventLogPath, Fsync: fsync, MaxSize: size, MaxFiles: o.eventLogMaxFiles}
}

func (o *options) zapLevel() (zapcore.Level, error) {
	switch o.logLevel {
	case "debug":
		return zapcore.DebugLevel, nil
	case "info":
		return zapcore.InfoLevel, nil
	case "error":
		return zapcore.ErrorLevel, nil
	}
	return 0, fmt.Errorf("--log-level must be debug, info or error, not %q", o.logLevel)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "audit" {
		return runAudit(args[1:], stdout, stderr)
	}
	var opts options
	fs := flag.NewFlagSet(binaryName, flag.ContinueOnError)
	fs.SetOutput(stderr)
	opts.bind(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if opts.showVersion {
		_, _ = fmt.Fprintln(stdout, version.String(binaryName))
		return 0
	}
	if err := opts.validate(); err != nil {
		_, _ = fmt.Fprintf(stderr, "%s: invalid flags:\n%v\n", binaryName, err)
		return 2
	}
	level, _ := opts.zapLevel()
	// Errors logged in a reconcile (and recovered panics) also go to Sentry when a DSN is set;
	// without one the logger is left as it is and nothing starts.
	reporter, err := errreport.New(opts.errReport())
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "%s: %v\n", binaryName, err)
		return 2
	}
	defer reporter.Close()
	ctrl.SetLogger(reporter.Logger(zap.New(zap.UseDevMode(opts.logDevelopmentFormat), zap.Level(level), zap.WriteTo(stderr))))
	log := ctrl.Log.WithName("setup")
	if reporter.Enabled() {
		log.Info("reporting reconcile errors and panics to Sentry", "environment", cmp.Or(opts.errReport().Environment, errreport.DefaultEnvironment))
	}

	if err := start(opts); err != nil {
		log.Error(err, "operator stopped with an error")
		return 1
	}
	return 0
}

func newScheme() (*runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register core types: %w", err)
	}
	if err := forgejov1alpha1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register forgejo types: %w", err)
	}
	return scheme, nil
}

func start(opts options) error {
	log := ctrl.Log.WithName("setup")
	scheme, err := newScheme()
	if err != nil {
		return err
	}
	cfg, err := restConfig(opts.kubeconfig)
	if err != nil {
		return fmt.Errorf("load Kubernetes client configuration: %w", err)
	}

	metricsOpts := metricsserver.Options{
		BindAddress:   opts.metricsAddr,
		SecureServing: opts.metricsSecure,
	}
	if opts.metricsSecure {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	mgrOpts := ctrl.Options{
		Scheme:                  scheme,
		Cache:                   operator.CacheOptions(),
		Metrics:                 metricsOpts,
		HealthProbeBindAddress:  opts.probeAddr,
		LeaderElection:          opts.leaderElect,
		LeaderElectionID:        opts.leaderElectionID,
		LeaderElectionNamespace: opts.leaderElectionNS,
		LeaseDuration:           &opts.leaseDuration,
		RenewDeadline:           &opts.renewDeadline,
		RetryPeriod:             &opts.retryPeriod,
		// The process exits when it loses the lease, so a new leader need not wait for it.
		LeaderElectionReleaseOnCancel: true,
	}
	// Every replica serves webhooks and is ready whether or not it leads; the leader election
	// identity carries the replica's address so that the others can forward deliveries to it.
	var lease types.NamespacedName
	var identity string
	if opts.leaderElect {
		ns, err := webhookforward.LeaseNamespace(opts.leaderElectionNS)
		if err != nil {
			return fmt.Errorf("leader election: %w", err)
		}
		lease = types.NamespacedName{Namespace: ns, Name: opts.leaderElectionID}
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("leader election identity: %w", err)
		}
		identity = webhookforward.Identity(host, webhookforward.AdvertisedAddress(opts.advertiseAddress, opts.webhookAddr))
		lock, err := webhookforward.NewLeaseLock(cfg, lease, identity, opts.renewDeadline)
		if err != nil {
			return err
		}
		mgrOpts.LeaderElectionResourceLockInterface = lock
	}
	if opts.watchNamespace != "" {
		mgrOpts.Cache.DefaultNamespaces = map[string]cache.Config{opts.watchNamespace: {}}
	}
	mgr, err := ctrl.NewManager(cfg, mgrOpts)
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	setup := operator.Options{
		PollInterval: opts.pollInterval,
		GCInterval:   opts.gcInterval,
		EventLog:     opts.eventLog(),
		AuditLogPath: opts.auditLogPath,
		Identity:     opts.identity,

		DeregisterDeadline:  opts.deregisterDeadline,
		AllowPrivilegedDinD: opts.allowPrivilegedDinD,
		LeaderLease:         lease,
		LeaderIdentity:      identity,
	}
	if opts.webhookAddr != "0" && opts.webhookAddr != "" {
		setup.WebhookAddr = opts.webhookAddr
	}
	if opts.webhookSecretFile != "" {
		secret, err := webhook.ReadSecretFile(opts.webhookSecretFile, log)
		if err != nil {
			return fmt.Errorf("--webhook-secret-file: %w", err)
		}
		setup.WebhookSharedSecret = secret
	}
	if err := operator.Setup(mgr, setup); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("add readiness check: %w", err)
	}

	log.Info("starting", "version", version.Version, "commit", version.Commit,
		"leaderElection", opts.leaderElect, "metricsAddress", opts.metricsAddr, "watchNamespace", opts.watchNamespace)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		return ctrl.GetConfig()
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	// As ctrl.GetConfig does: client-go's default of 5 requests a second would throttle a burst
	// of runners; the API server's priority and fairness protects it instead.
	if cfg.QPS == 0 {
		cfg.QPS = -1
	}
	return cfg, nil
}
