package httpapi

import (
	"net/http"
	"slices"

	"github.com/livepatch-onprem/livepatch/server"
)

const (
	defaultReportLimit = 1000
	maxReportLimit     = 10000
)

// machinePage is one page of a machine report and the cursor of the next page: the id of
// its last machine when the page is full, else empty.
type machinePage[T any] struct {
	Machines []T    `json:"machines"`
	Next     string `json:"next"`
}

func newMachinePage[T any](machines []T, limit int, id func(T) string) machinePage[T] {
	p := machinePage[T]{Machines: nonNil(machines)}
	if len(machines) == limit {
		p.Next = id(machines[len(machines)-1])
	}
	return p
}

// reportMachines lists the machines a filter selects (tier, patch version and state,
// kernel, hostname, tags, last-seen age), a page at a time with a keyset cursor.
func (s *Server) reportMachines(w http.ResponseWriter, r *http.Request) error {
	limit, err := pageLimit(r)
	if err != nil {
		return err
	}
	f, err := s.machineFilter(r, machineQuery(r))
	if err != nil {
		return err
	}
	f.After, f.Limit = queryValue(r, "after"), limit
	machines, err := s.store.Machines(r.Context(), f)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, newMachinePage(machines, f.Limit, func(m server.Machine) string { return m.ID }))
}

// pageLimit reads the ?limit= of a paged report: defaultReportLimit when absent.
func pageLimit(r *http.Request) (int, error) {
	return limitParam(r, "limit", defaultReportLimit)
}

// checkPatchState validates a ?state= filter; empty matches every state.
func checkPatchState(state string) error {
	if state != "" && !slices.Contains(server.PatchStates, state) {
		return server.Errorf(server.CodeInvalid, "invalid patch state %q: want one of %v", state, server.PatchStates)
	}
	return nil
}

func (s *Server) reportPatchHealth(w http.ResponseWriter, r *http.Request) error {
	tier, version := queryValue(r, "tier"), queryValue(r, "version")
	if tier == "" || version == "" {
		return server.Errorf(server.CodeInvalid, "tier and version are required")
	}
	if err := s.checkTier(r, tier); err != nil {
		return err
	}
	states, err := s.store.PatchHealth(r.Context(), tier, version)
	if err != nil {
		return err
	}
	out := server.PatchHealth{Tier: tier, Version: version, States: map[string]int{}}
	for _, st := range server.PatchStates {
		out.States[st] = states[st]
		out.Total += states[st]
	}
	if out.Rollout, err = s.findRollout(r, tier, version); err != nil { // api_rollout.go
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

// reportKernels answers the machines per kernel and architecture, counted at most
// kernelsTTL ago by this unit (kernels.go).
func (s *Server) reportKernels(w http.ResponseWriter, r *http.Request) error {
	kernels, err := s.kernels.get(r.Context(), s.store, s.opts.Now)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"kernels": nonNil(kernels)})
}
