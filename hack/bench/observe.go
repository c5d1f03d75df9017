package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejosim"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/runnerpod"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/test/cluster"
)

// startForgejo serves the simulator on a free loopback port behind counter.
// racing is the simulator's DeliveryRaceProbability.
func startForgejo(counter *apiCounter, racing float64) (*forgejosim.Server, string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, fmt.Errorf("listen for the Forgejo simulator: %w", err)
	}
	url := "http://" + ln.Addr().String()
	sim := forgejosim.New(forgejosim.Options{AdminToken: adminToken, PublicURL: url, DeliveryRaceProbability: racing})
	srv := &http.Server{Handler: counter.wrap(sim), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logf("the Forgejo simulator stopped: %v", err)
		}
	}()
	closeSim := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		sim.Close()
	}
	return sim, url, closeSim, nil
}

// operatorUserAgent is how the operator's Forgejo client introduces itself (forgejo.Config's
// default), which tells its REST calls from anyone else's.
const operatorUserAgent = "forgejo-runner-operator"

// apiCounter counts requests to the simulator by kind and endpoint.
type apiCounter struct {
	mu sync.Mutex
	s  apiSnapshot
}

// apiSnapshot is the counters at one moment; sub gives the calls between two.
type apiSnapshot struct {
	REST         int            // /api/v1/..., anyone
	OperatorREST int            // /api/v1/... from the operator's client
	Runner       int            // /api/actions/... (the runner protocol)
	Other        int            // the control API and anything else
	Failed       int            // answers of 400 and above
	JobsPolls    int            // GET .../actions/runners/jobs
	LastJobsPoll time.Time      // when the latest of those arrived
	Endpoints    map[string]int // "METHOD /path" with numbers as {id}, "(status)" appended when ≥ 400
}

func newAPICounter() *apiCounter {
	return &apiCounter{s: apiSnapshot{Endpoints: map[string]int{}}}
}

func (c *apiCounter) snapshot() apiSnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.s
	s.Endpoints = maps.Clone(c.s.Endpoints)
	return s
}

func (s apiSnapshot) sub(earlier apiSnapshot) apiSnapshot {
	d := apiSnapshot{
		REST: s.REST - earlier.REST, OperatorREST: s.OperatorREST - earlier.OperatorREST,
		Runner: s.Runner - earlier.Runner, Other: s.Other - earlier.Other, Failed: s.Failed - earlier.Failed,
		JobsPolls: s.JobsPolls - earlier.JobsPolls, LastJobsPoll: s.LastJobsPoll,
		Endpoints: map[string]int{},
	}
	for k, n := range s.Endpoints {
		if n -= earlier.Endpoints[k]; n != 0 {
			d.Endpoints[k] = n
		}
	}
	return d
}

func (c *apiCounter) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		c.count(r, rec.status)
	})
}

func (c *apiCounter) count(r *http.Request, status int) {
	path := r.URL.Path
	key := r.Method + " " + normalizePath(path)
	if status >= 400 {
		key += fmt.Sprintf(" (%d)", status)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.s.Endpoints[key]++
	if status >= 400 {
		c.s.Failed++
	}
	switch {
	case strings.HasPrefix(path, "/api/v1/"):
		c.s.REST++
		if strings.HasPrefix(r.UserAgent(), operatorUserAgent) {
			c.s.OperatorREST++
		}
		if r.Method == http.MethodGet && strings.HasSuffix(path, "/actions/runners/jobs") {
			c.s.JobsPolls++
			c.s.LastJobsPoll = time.Now()
		}
	case strings.HasPrefix(path, "/api/actions/"):
		c.s.Runner++
	default:
		c.s.Other++
	}
}

// normalizePath folds runner ids into {id}, so that per-runner calls count as one endpoint.
func normalizePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if s != "" && strings.Trim(s, "0123456789") == "" {
			segs[i] = "{id}"
		}
	}
	return strings.Join(segs, "/")
}

// statusRecorder remembers the status a handler answered with.
type statusRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController (and so Connect's flushing) reach the real writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Flush keeps the writer a Flusher for handlers that check with a type assertion.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// podObserver stamps when each runner pod is first seen, first seen Running, and gone. A pod's
// creationTimestamp has whole seconds only, too coarse for these figures, so the times are the
// moments the watch delivers the events: a few milliseconds late at most.
type podObserver struct {
	mu       sync.Mutex
	byHandle map[string]*podTimes
	handles  map[types.UID]string // every pod ever seen → its job handle ("" for none)
	present  map[types.UID]bool
	peak     int
	errs     []string
}

// podTimes are the times of the first pod made for a handle; later ones are only counted.
type podTimes struct {
	pods    int // runner pods made for the handle; more than one is a bug
	first   types.UID
	seen    time.Time
	running time.Time
	gone    time.Time
}

func watchPods(ctx context.Context, c *cluster.Cluster, ns string) (*podObserver, func(), error) {
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return nil, nil, fmt.Errorf("make a Kubernetes client: %w", err)
	}
	o := &podObserver{byHandle: map[string]*podTimes{}, handles: map[types.UID]string{}, present: map[types.UID]bool{}}
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0,
		informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
			lo.LabelSelector = runnerpod.LabelAppName + "=" + runnerpod.AppName
		}))
	inf := factory.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { o.observe(obj, time.Now()) },
		UpdateFunc: func(_, obj any) { o.observe(obj, time.Now()) },
		DeleteFunc: func(obj any) { o.deleted(obj, time.Now()) },
	}); err != nil {
		return nil, nil, fmt.Errorf("watch runner pods: %w", err)
	}
	stopCh := make(chan struct{})
	factory.Start(stopCh)
	stop := func() {
		close(stopCh)
		factory.Shutdown()
	}
	syncCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if !toolscache.WaitForCacheSync(syncCtx.Done(), inf.HasSynced) {
		stop()
		return nil, nil, errors.New("watch runner pods: the informer did not sync within a minute")
	}
	return o, stop, nil
}

func (o *podObserver) observe(obj any, now time.Time) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	handle, known := o.handles[pod.UID]
	if !known {
		args, err := runnerpod.ParseRunnerArgs(pod)
		if err != nil {
			o.errs = append(o.errs, err.Error())
		}
		handle = args.Handle
		o.handles[pod.UID] = handle
		o.present[pod.UID] = true
		o.peak = max(o.peak, len(o.present))
		t := o.byHandle[handle]
		if t == nil {
			t = &podTimes{first: pod.UID, seen: now}
			o.byHandle[handle] = t
		}
		t.pods++
	}
	if t := o.byHandle[handle]; t.first == pod.UID && pod.Status.Phase == corev1.PodRunning && t.running.IsZero() {
		t.running = now
	}
}

func (o *podObserver) deleted(obj any, now time.Time) {
	if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.present, pod.UID)
	if handle, ok := o.handles[pod.UID]; ok && o.byHandle[handle].first == pod.UID {
		o.byHandle[handle].gone = now
	}
}

func (o *podObserver) created() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.handles)
}

func (o *podObserver) live() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.present)
}

// snapshot copies what was observed, for the figures.
func (o *podObserver) snapshot() (byHandle map[string]podTimes, pods, peak int, errs []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	byHandle = make(map[string]podTimes, len(o.byHandle))
	for h, t := range o.byHandle {
		byHandle[h] = *t
	}
	return byHandle, len(o.handles), o.peak, append([]string(nil), o.errs...)
}
