package httpapi

import (
	"net/http"
	"slices"
	"strconv"

	"github.com/livepatch-onprem/livepatch/server"
)

const (
	defaultReportLimit = 1000
	maxReportLimit     = 10000
)

type machinesResponse struct {
	Machines []server.Machine `json:"machines"`
	Next     string           `json:"next"`
}

// reportMachines lists machines of a tier (optionally running a patch version, in a patch
// state), a page at a time with a keyset cursor.
func (s *Server) reportMachines(w http.ResponseWriter, r *http.Request) error {
	f := server.MachineFilter{
		Tier:         queryValue(r, "tier"),
		PatchVersion: queryValue(r, "version"),
		PatchState:   queryValue(r, "state"),
		After:        queryValue(r, "after"),
		Limit:        defaultReportLimit,
	}
	if v := queryValue(r, "limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxReportLimit {
			return server.Errorf(server.CodeInvalid, "limit must be a number from 1 to %d", maxReportLimit)
		}
		f.Limit = n
	}
	if f.PatchState != "" && !slices.Contains(server.PatchStates, f.PatchState) {
		return server.Errorf(server.CodeInvalid, "invalid patch state %q: want one of %v", f.PatchState, server.PatchStates)
	}
	if f.Tier != "" {
		if err := s.checkTier(r, f.Tier); err != nil {
			return err
		}
	}
	machines, err := s.store.Machines(r.Context(), f)
	if err != nil {
		return err
	}
	out := machinesResponse{Machines: nonNil(machines)}
	if len(machines) == f.Limit {
		out.Next = machines[len(machines)-1].ID
	}
	return writeJSON(w, http.StatusOK, out)
}

type patchHealthResponse struct {
	Tier    string         `json:"tier"`
	Version string         `json:"version"`
	Total   int            `json:"total"`
	States  map[string]int `json:"states"`
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
	out := patchHealthResponse{Tier: tier, Version: version, States: map[string]int{}}
	for _, st := range server.PatchStates {
		out.States[st] = states[st]
		out.Total += states[st]
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) reportKernels(w http.ResponseWriter, r *http.Request) error {
	kernels, err := s.store.Kernels(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"kernels": nonNil(kernels)})
}
