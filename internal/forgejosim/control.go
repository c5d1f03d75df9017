package forgejosim

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// ControlPrefix is where the control API lives; no Forgejo route uses it.
const ControlPrefix = "/_sim/"

// Runner is a registered runner as the simulator's state shows it; its token is never shown.
type Runner struct {
	ID          int64     `json:"id"`
	UUID        string    `json:"uuid"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Ephemeral   bool      `json:"ephemeral"`
	OwnerID     int64     `json:"owner_id"`
	RepoID      int64     `json:"repo_id"`
	Labels      []string  `json:"labels"`
	Version     string    `json:"version"`
	Status      string    `json:"status"`
	TasksTaken  int       `json:"tasks_taken"`
	LastHandle  string    `json:"last_handle,omitempty"` // of its last FetchSingleTask
	Created     time.Time `json:"created"`
	LastOnline  time.Time `json:"last_online,omitzero"`
}

// State is everything the simulator holds, minus secrets (runner and API tokens, hook secrets).
type State struct {
	Version    string     `json:"version"`
	Runners    []Runner   `json:"runners"`
	Runs       []Run      `json:"runs"`
	Jobs       []Job      `json:"jobs"`
	Tasks      []Task     `json:"tasks"`
	Hooks      []Hook     `json:"hooks"`
	Deliveries []Delivery `json:"deliveries"`
	Faults     Faults     `json:"faults"`
}

// State returns a snapshot of the whole simulator.
func (s *Server) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revealLocked()
	st := State{
		Version: s.version, Runners: []Runner{}, Runs: []Run{}, Jobs: []Job{}, Tasks: []Task{}, Hooks: []Hook{},
		Deliveries: s.deliveriesLocked(),
		Faults:     Faults{Endpoints: slices.Clone(s.faults), Webhooks: s.hookFaults},
	}
	for _, id := range sortedKeys(s.runners) {
		rn := s.runners[id]
		st.Runners = append(st.Runners, Runner{
			ID: rn.id, UUID: rn.uuid, Name: rn.name, Description: rn.description, Ephemeral: rn.ephemeral,
			OwnerID: rn.ownerID, RepoID: rn.repoID, Labels: nonNil(rn.labels), Version: rn.version,
			Status: s.runnerStatusLocked(rn), TasksTaken: rn.tasksTaken, LastHandle: rn.lastHandle,
			Created: rn.created, LastOnline: rn.lastOnline,
		})
	}
	for _, id := range sortedKeys(s.runs) {
		st.Runs = append(st.Runs, s.runViewLocked(s.runs[id]))
	}
	for _, id := range sortedKeys(s.jobs) {
		st.Jobs = append(st.Jobs, s.jobViewLocked(s.jobs[id]))
	}
	for _, id := range sortedKeys(s.tasks) {
		st.Tasks = append(st.Tasks, taskView(s.tasks[id]))
	}
	for _, id := range sortedKeys(s.hooks) {
		st.Hooks = append(st.Hooks, hookView(s.hooks[id]))
	}
	return st
}

// Job returns one job by id.
func (s *Server) Job(id int64) (Job, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revealLocked()
	j, ok := s.jobs[id]
	if !ok {
		return Job{}, false
	}
	return s.jobViewLocked(j), true
}

// RunnerByUUID returns one registered runner; false once it is deleted.
func (s *Server) RunnerByUUID(uuid string) (Runner, bool) {
	for _, r := range s.State().Runners {
		if r.UUID == uuid {
			return r, true
		}
	}
	return Runner{}, false
}

// routeControl serves the control API (JSON, admin token):
//
//	GET    /_sim/state                 State
//	POST   /_sim/jobs                  QueueJobsRequest → 201 []Job (one run and one push each)
//	POST   /_sim/runs                  QueueRunRequest → 201 Run (one run, several jobs, one push)
//	POST   /_sim/jobs/{id}/cancel      → Job
//	POST   /_sim/jobs/{id}/complete    {"status": "success"|"failure"|"cancelled"|"skipped"} → Job
//	GET    /_sim/hooks                 []Hook
//	POST   /_sim/hooks                 HookConfig → 201 Hook
//	DELETE /_sim/hooks/{id}            204
//	GET    /_sim/deliveries            []Delivery
//	POST   /_sim/tokens                {"scope": Scope, "token": optional fixed value} → 201 {"token"}
//	GET    /_sim/faults                Faults
//	PUT    /_sim/faults                Faults → Faults
//	DELETE /_sim/faults                204
//	PUT    /_sim/version               {"version": "11.0.0"} → 204
func (s *Server) routeControl() {
	handle := func(pattern string, h func(*http.Request) (int, any, error)) {
		s.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if subtle.ConstantTimeCompare([]byte(requestToken(r)), []byte(s.opts.AdminToken)) != 1 {
				writeJSON(w, http.StatusUnauthorized, APIError{Message: "control API needs the admin token"})
				return
			}
			status, body, err := h(r)
			if err != nil {
				if status < 400 {
					status = http.StatusUnprocessableEntity
				}
				writeJSON(w, status, APIError{Message: err.Error()})
				return
			}
			if body == nil {
				w.WriteHeader(status)
				return
			}
			writeJSON(w, status, body)
		}))
	}
	handle("GET /_sim/state", func(*http.Request) (int, any, error) { return http.StatusOK, s.State(), nil })
	handle("POST /_sim/jobs", func(r *http.Request) (int, any, error) {
		var req QueueJobsRequest
		if err := decodeBody(r, &req); err != nil {
			return http.StatusBadRequest, nil, err
		}
		jobs, err := s.QueueJobs(req)
		return http.StatusCreated, jobs, err
	})
	handle("POST /_sim/runs", func(r *http.Request) (int, any, error) {
		var req QueueRunRequest
		if err := decodeBody(r, &req); err != nil {
			return http.StatusBadRequest, nil, err
		}
		run, err := s.QueueRun(req)
		return http.StatusCreated, run, err
	})
	handle("POST /_sim/jobs/{id}/cancel", func(r *http.Request) (int, any, error) {
		id, err := pathID(r)
		if err != nil {
			return http.StatusBadRequest, nil, err
		}
		j, err := s.CancelJob(id)
		return http.StatusOK, j, err
	})
	handle("POST /_sim/jobs/{id}/complete", func(r *http.Request) (int, any, error) {
		id, err := pathID(r)
		if err != nil {
			return http.StatusBadRequest, nil, err
		}
		var req struct {
			Status JobStatus `json:"status"`
		}
		if err := decodeBody(r, &req); err != nil {
			return http.StatusBadRequest, nil, err
		}
		j, err := s.CompleteJob(id, req.Status)
		return http.StatusOK, j, err
	})
	handle("GET /_sim/hooks", func(*http.Request) (int, any, error) { return http.StatusOK, s.State().Hooks, nil })
	handle("POST /_sim/hooks", func(r *http.Request) (int, any, error) {
		var cfg HookConfig
		if err := decodeBody(r, &cfg); err != nil {
			return http.StatusBadRequest, nil, err
		}
		h, err := s.AddHook(cfg)
		return http.StatusCreated, h, err
	})
	handle("DELETE /_sim/hooks/{id}", func(r *http.Request) (int, any, error) {
		id, err := pathID(r)
		if err != nil {
			return http.StatusBadRequest, nil, err
		}
		if err := s.RemoveHook(id); err != nil {
			return http.StatusNotFound, nil, err
		}
		return http.StatusNoContent, nil, nil
	})
	handle("GET /_sim/deliveries", func(*http.Request) (int, any, error) { return http.StatusOK, s.Deliveries(), nil })
	handle("POST /_sim/tokens", func(r *http.Request) (int, any, error) {
		var req struct {
			Scope Scope  `json:"scope"`
			Token string `json:"token"`
		}
		if err := decodeBody(r, &req); err != nil {
			return http.StatusBadRequest, nil, err
		}
		token := req.Token
		var err error
		if token == "" {
			token, err = s.CreateToken(req.Scope)
		} else {
			err = s.AddToken(token, req.Scope)
		}
		return http.StatusCreated, map[string]string{"token": token}, err
	})
	handle("GET /_sim/faults", func(*http.Request) (int, any, error) { return http.StatusOK, s.Faults(), nil })
	handle("PUT /_sim/faults", func(r *http.Request) (int, any, error) {
		var f Faults
		if err := decodeBody(r, &f); err != nil {
			return http.StatusBadRequest, nil, err
		}
		if err := s.SetFaults(f); err != nil {
			return 0, nil, err
		}
		return http.StatusOK, s.Faults(), nil
	})
	handle("DELETE /_sim/faults", func(*http.Request) (int, any, error) {
		s.ClearFaults()
		return http.StatusNoContent, nil, nil
	})
	handle("PUT /_sim/version", func(r *http.Request) (int, any, error) {
		var req struct {
			Version string `json:"version"`
		}
		if err := decodeBody(r, &req); err != nil {
			return http.StatusBadRequest, nil, err
		}
		if req.Version == "" {
			return 0, nil, errors.New("version is required")
		}
		s.SetVersion(req.Version)
		return http.StatusNoContent, nil, nil
	})
	handle(ControlPrefix, func(*http.Request) (int, any, error) {
		return http.StatusNotFound, nil, errors.New("no such control route")
	})
}

func decodeBody(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON body: %w", err)
	}
	return nil
}

func pathID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid id %q", r.PathValue("id"))
	}
	return id, nil
}
