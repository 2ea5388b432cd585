package httpapi

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// Bounds of the machine routes.
const (
	// defaultHistoryLimit is how many changes machine show and a history page carry by
	// default; maxReportLimit bounds both.
	defaultHistoryLimit = 100
	// moveBatch bounds the machines one transaction of a bulk move changes, so that
	// check-ins never wait long on a move's row locks.
	moveBatch = 5000
)

// showMachine answers a machine with its newest changes.
func (s *Server) showMachine(w http.ResponseWriter, r *http.Request) error {
	id, err := machineID(r)
	if err != nil {
		return err
	}
	limit, err := limitParam(r, "history", defaultHistoryLimit)
	if err != nil {
		return err
	}
	d, err := s.store.Machine(r.Context(), id, limit)
	if err != nil {
		return err
	}
	d.History = nonNil(d.History)
	return writeJSON(w, http.StatusOK, d)
}

// historyPage is one page of a machine's history, newest first, and the cursor of the next
// page (the id of its last event when the page is full, else 0).
type historyPage struct {
	Events []server.MachineEvent `json:"events"`
	Next   int64                 `json:"next,omitempty"`
}

// machineHistory answers a page of a machine's changes, or of its check-ins with ?all=true.
func (s *Server) machineHistory(w http.ResponseWriter, r *http.Request) error {
	id, err := machineID(r)
	if err != nil {
		return err
	}
	f := server.HistoryFilter{}
	if f.Limit, err = limitParam(r, "limit", defaultHistoryLimit); err != nil {
		return err
	}
	switch v := queryValue(r, "all"); v {
	case "", "false":
	case "true":
		f.All = true
	default:
		return server.Errorf(server.CodeInvalid, "invalid all %q: want true or false", v)
	}
	if v := queryValue(r, "before"); v != "" {
		if f.Before, err = strconv.ParseInt(v, 10, 64); err != nil || f.Before < 1 {
			return server.Errorf(server.CodeInvalid, "invalid before %q: want an event id", v)
		}
	}
	events, err := s.store.MachineHistory(r.Context(), id, f)
	if err != nil {
		return err
	}
	p := historyPage{Events: nonNil(events)}
	if len(events) == f.Limit {
		p.Next = events[len(events)-1].ID
	}
	return writeJSON(w, http.StatusOK, p)
}

// moveRequest names the tier to move machines to; a bulk move also names the machines
// with a filter, as the machines report takes it.
type moveRequest struct {
	Tier   string               `json:"tier"`
	Filter *server.MachineQuery `json:"filter,omitempty"`
}

// moveMachine moves one machine to another tier.
func (s *Server) moveMachine(w http.ResponseWriter, r *http.Request) error {
	id, err := machineID(r)
	if err != nil {
		return err
	}
	var req moveRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if req.Filter != nil {
		return server.Errorf(server.CodeInvalid, "a filter moves many machines: POST /v1/admin/machines/move")
	}
	if err := s.checkMoveTier(r, req.Tier); err != nil {
		return err
	}
	m, err := s.store.MoveMachine(r.Context(), id, req.Tier, s.opts.Now())
	if err != nil {
		return err
	}
	s.securityEvent(r, "machine_move", adminUser(r.Context()), "machine", id, "tier", req.Tier)
	return writeJSON(w, http.StatusOK, m)
}

// moveMachines moves the machines a filter selects to another tier.
func (s *Server) moveMachines(w http.ResponseWriter, r *http.Request) error {
	var req moveRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if req.Filter == nil {
		return server.Errorf(server.CodeInvalid, "a bulk move needs a filter: use {} to move every machine")
	}
	if err := s.checkMoveTier(r, req.Tier); err != nil {
		return err
	}
	f, err := s.machineFilter(r, *req.Filter)
	if err != nil {
		return err
	}
	n, err := s.store.MoveMachines(r.Context(), server.MachineMove{Filter: f, Tier: req.Tier, Batch: moveBatch}, s.opts.Now())
	if err != nil {
		return err
	}
	s.securityEvent(r, "machines_move", adminUser(r.Context()), "machines", n, "tier", req.Tier)
	return writeJSON(w, http.StatusOK, map[string]int{"moved": n})
}

// checkMoveTier validates the tier of a move: required, and not-found when unknown.
func (s *Server) checkMoveTier(r *http.Request, tier string) error {
	if tier == "" {
		return server.Errorf(server.CodeInvalid, "tier is required")
	}
	return s.checkTier(r, tier)
}

// tagRequest sets and removes tags of a machine.
type tagRequest struct {
	Set    map[string]string `json:"set,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

// tagMachine sets and removes tags of a machine.
func (s *Server) tagMachine(w http.ResponseWriter, r *http.Request) error {
	id, err := machineID(r)
	if err != nil {
		return err
	}
	var req tagRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if len(req.Set)+len(req.Remove) == 0 {
		return server.Errorf(server.CodeInvalid, "nothing to do: set or remove tags")
	}
	if len(req.Set) > server.MaxTags || len(req.Remove) > server.MaxTags {
		return server.Errorf(server.CodeInvalid, "at most %d tags at once", server.MaxTags)
	}
	for k, v := range req.Set {
		if err := server.CheckTag(k, v); err != nil {
			return err
		}
	}
	for _, k := range req.Remove {
		if err := server.CheckTag(k, ""); err != nil {
			return err
		}
	}
	m, err := s.store.TagMachine(r.Context(), id, req.Set, req.Remove)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, m)
}

// machineID reads and validates the {id} of a machine route.
func machineID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if err := server.CheckMachineID(id); err != nil {
		return "", err
	}
	return id, nil
}

// limitParam reads a page size from the query parameter key: def when absent.
func limitParam(r *http.Request, key string, def int) (int, error) {
	v := queryValue(r, key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxReportLimit {
		return 0, server.Errorf(server.CodeInvalid, "%s must be a number from 1 to %d", key, maxReportLimit)
	}
	return n, nil
}

// machineQuery reads a machine filter from the query of a report.
func machineQuery(r *http.Request) server.MachineQuery {
	q := r.URL.Query()
	return server.MachineQuery{
		Tier:         queryValue(r, "tier"),
		PatchVersion: queryValue(r, "version"),
		PatchState:   queryValue(r, "state"),
		Kernel:       queryValue(r, "kernel"),
		Hostname:     queryValue(r, "hostname"),
		Tags:         q["tag"],
		SeenBefore:   queryValue(r, "seen-before"),
		SeenAfter:    queryValue(r, "seen-after"),
	}
}

// machineFilter validates a machine filter and resolves its ages against the server's
// clock: a malformed value is invalid, an unknown tier not-found.
func (s *Server) machineFilter(r *http.Request, q server.MachineQuery) (server.MachineFilter, error) {
	f := server.MachineFilter{
		Tier: q.Tier, PatchVersion: q.PatchVersion, PatchState: q.PatchState,
		Kernel: q.Kernel, Hostname: q.Hostname,
	}
	if err := checkPatchState(f.PatchState); err != nil {
		return f, err
	}
	if len(q.Tags) > server.MaxTags {
		return f, server.Errorf(server.CodeInvalid, "at most %d tag filters", server.MaxTags)
	}
	for _, kv := range q.Tags {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return f, server.Errorf(server.CodeInvalid, "invalid tag filter %q: want key=value", kv)
		}
		if err := server.CheckTag(k, v); err != nil {
			return f, err
		}
		if f.Tags == nil {
			f.Tags = map[string]string{}
		}
		f.Tags[k] = v
	}
	var err error
	if f.SeenBefore, err = s.ageAgo("seen-before", q.SeenBefore); err != nil {
		return f, err
	}
	if f.SeenAfter, err = s.ageAgo("seen-after", q.SeenAfter); err != nil {
		return f, err
	}
	if f.Tier != "" {
		if err := s.checkTier(r, f.Tier); err != nil {
			return f, err
		}
	}
	return f, nil
}

// ageAgo returns the time an age given as the parameter name was ago, by the server's
// clock; zero when value is empty.
func (s *Server) ageAgo(name, value string) (time.Time, error) {
	if value == "" {
		return time.Time{}, nil
	}
	d, err := server.ParseAge(value)
	if err != nil {
		return time.Time{}, server.Errorf(server.CodeInvalid, "invalid %s: %s", name, server.ErrorMessage(err))
	}
	return s.opts.Now().Add(-d), nil
}
