package fcstandin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
)

// Request is one request the stand-in received, whether it was accepted or not.
type Request struct {
	Method string
	Path   string
	Body   string
	// Status is what the stand-in answered: 2xx accepted, 4xx refused.
	Status int
	// Refusal says why a request was refused.
	Refusal string
}

// Server is one Firecracker process's API, as far as the description says.
type Server struct {
	spec *Spec
	id   string

	mu         sync.Mutex
	started    bool
	bootSource bool
	machine    map[string]any
	requests   []Request
	onAction   func(action string)
	held       chan struct{} // while set, requests wait for it to close

	ln  net.Listener
	srv *http.Server
}

// New returns a Server for one microVM instance id (InstanceInfo.id).
func New(spec *Spec, id string) *Server {
	return &Server{spec: spec, id: id, machine: map[string]any{"vcpu_count": 1, "mem_size_mib": 128, "smt": false}}
}

// OnAction sets a function called after each accepted action (InstanceStart, SendCtrlAltDel,
// FlushMetrics), e.g. to write a console line as a booting guest would.
func (s *Server) OnAction(f func(action string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onAction = f
}

// Listen serves on a Unix socket at path until Close.
func (s *Server) Listen(path string) error {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", path, err)
	}
	s.ln = ln
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 0}
	go s.srv.Serve(ln) //nolint:errcheck,gosec // ends with Close
	return nil
}

// Close stops serving, as a Firecracker process that exits; the socket file is removed like the
// kernel removes nothing: Firecracker leaves it, so the stand-in does too.
func (s *Server) Close() error {
	if s.srv == nil {
		return nil
	}
	if ul, ok := s.ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	err := s.srv.Close()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Requests returns every request received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Started tells whether InstanceStart was accepted.
func (s *Server) Started() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started
}

// Refused returns the requests the stand-in refused.
func (s *Server) Refused() []Request {
	var out []Request
	for _, r := range s.Requests() {
		if r.Status >= 400 {
			out = append(out, r)
		}
	}
	return out
}

// Hold makes the server a busy VMM: requests get no answer until release is called (or their
// client gives up).
func (s *Server) Hold() (release func()) {
	held := make(chan struct{})
	s.mu.Lock()
	s.held = held
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.held == held {
				s.held = nil
			}
			s.mu.Unlock()
			close(held)
		})
	}
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	held := s.held
	s.mu.Unlock()
	if held != nil {
		select {
		case <-held:
		case <-r.Context().Done():
			return
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	status, answer, refusal := s.handle(r, body)
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Body: string(body), Status: status, Refusal: refusal})
	onAction := s.onAction
	s.mu.Unlock()

	if status < 300 && r.URL.Path == "/actions" && onAction != nil {
		var a struct {
			ActionType string `json:"action_type"`
		}
		_ = json.Unmarshal(body, &a)
		onAction(a.ActionType)
	}
	w.Header().Set("Content-Type", "application/json")
	if refusal != "" {
		answer = map[string]string{"fault_message": refusal}
	}
	w.WriteHeader(status)
	if answer != nil {
		_ = json.NewEncoder(w).Encode(answer)
	}
}

// handle decides a request under s.mu.
func (s *Server) handle(r *http.Request, body []byte) (status int, answer any, refusal string) {
	op, params, pathFound := s.spec.match(r.Method, r.URL.Path)
	if op == nil {
		if pathFound {
			return http.StatusMethodNotAllowed, nil, fmt.Sprintf("%s is not allowed on %s", r.Method, r.URL.Path)
		}
		return http.StatusNotFound, nil, fmt.Sprintf("no such path %s", r.URL.Path)
	}
	var decoded any
	for _, p := range op.params {
		switch p.in {
		case "path":
			if params[p.name] == "" {
				return http.StatusBadRequest, nil, fmt.Sprintf("missing path parameter %s", p.name)
			}
		case "body":
			if len(bytes.TrimSpace(body)) == 0 {
				if p.required {
					return http.StatusBadRequest, nil, "the request needs a body"
				}
				continue
			}
			if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				return http.StatusBadRequest, nil, fmt.Sprintf("content type %q, want application/json", ct)
			}
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.UseNumber()
			if err := dec.Decode(&decoded); err != nil {
				return http.StatusBadRequest, nil, fmt.Sprintf("body is not JSON: %v", err)
			}
			if err := s.spec.validate(p.schema, decoded, "body"); err != nil {
				return http.StatusBadRequest, nil, err.Error()
			}
		}
	}
	if len(bytes.TrimSpace(body)) > 0 && decoded == nil && r.Method != http.MethodGet {
		return http.StatusBadRequest, nil, "this operation takes no body"
	}
	if op.preBoot && s.started {
		return http.StatusBadRequest, nil, "the operation is not supported after starting the microVM"
	}
	if op.postBoot && !s.started {
		return http.StatusBadRequest, nil, "the operation is not supported before starting the microVM"
	}
	return s.apply(r.Method, r.URL.Path, params, decoded)
}

// apply carries out an accepted request. Beyond the description, it keeps Firecracker's own
// rules for actions: InstanceStart needs a boot source and happens once; SendCtrlAltDel needs a
// running guest.
func (s *Server) apply(method, path string, params map[string]string, body any) (int, any, string) {
	obj, _ := body.(map[string]any)
	switch {
	case method == http.MethodGet && path == "/":
		state := "Not started"
		if s.started {
			state = "Running"
		}
		return http.StatusOK, map[string]any{"app_name": "Firecracker", "id": s.id, "state": state, "vmm_version": s.spec.Version}, ""
	case method == http.MethodGet && path == "/version":
		return http.StatusOK, map[string]any{"firecracker_version": s.spec.Version}, ""
	case method == http.MethodGet && path == "/machine-config":
		return http.StatusOK, s.machine, ""
	case method == http.MethodGet:
		return http.StatusOK, map[string]any{}, ""
	case path == "/boot-source":
		s.bootSource = true
	case path == "/machine-config":
		if method == http.MethodPut {
			s.machine = map[string]any{"smt": false}
		}
		for k, v := range obj {
			s.machine[k] = v
		}
	case path == "/actions":
		switch obj["action_type"] {
		case "InstanceStart":
			if s.started {
				return http.StatusBadRequest, nil, "the microVM is already running"
			}
			if !s.bootSource {
				return http.StatusBadRequest, nil, "cannot start the microVM without a boot source (kernel)"
			}
			s.started = true
		case "SendCtrlAltDel", "FlushMetrics":
			if !s.started {
				return http.StatusBadRequest, nil, "the operation is not supported before starting the microVM"
			}
		}
	}
	_ = params
	return http.StatusNoContent, nil, ""
}
