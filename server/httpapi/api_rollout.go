package httpapi

import (
	"net/http"

	"github.com/livepatch-onprem/livepatch/server"
)

// registerRollouts declares the rollout routes (called from register).
func (s *Server) registerRollouts() {
	s.handle("GET /v1/admin/rollout-policies", adminAccess, s.listRolloutPolicies)
	s.handle("GET /v1/admin/tiers/{name}/rollout-policy", adminAccess, s.showRolloutPolicy)
	s.handle("PUT /v1/admin/tiers/{name}/rollout-policy", adminAccess, s.setRolloutPolicy)
	s.handle("DELETE /v1/admin/tiers/{name}/rollout-policy", adminAccess, s.deleteRolloutPolicy)
	s.handle("GET /v1/admin/tiers/{name}/rollouts", adminAccess, s.listRollouts)
	s.handle("GET /v1/admin/tiers/{name}/rollouts/{version}", adminAccess, s.showRollout)
	s.handle("POST /v1/admin/tiers/{name}/rollouts/{version}/{action}", adminAccess, s.setRolloutState)
}

func (s *Server) listRolloutPolicies(w http.ResponseWriter, r *http.Request) error {
	policies, err := s.store.RolloutPolicies(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"policies": nonNil(policies)})
}

func (s *Server) showRolloutPolicy(w http.ResponseWriter, r *http.Request) error {
	tier := r.PathValue("name")
	if err := s.checkTier(r, tier); err != nil {
		return err
	}
	policies, err := s.store.RolloutPolicies(r.Context())
	if err != nil {
		return err
	}
	for _, p := range policies {
		if p.Tier == tier {
			return writeJSON(w, http.StatusOK, p)
		}
	}
	return server.Errorf(server.CodeNotFound, "tier %q has no rollout policy", tier)
}

func (s *Server) setRolloutPolicy(w http.ResponseWriter, r *http.Request) error {
	tier := r.PathValue("name")
	if err := server.CheckTierName(tier); err != nil {
		return err
	}
	var p server.RolloutPolicy
	if err := decodeJSON(w, r, &p, false); err != nil {
		return err
	}
	if p.Tier != "" && p.Tier != tier {
		return server.Errorf(server.CodeInvalid, "the policy names tier %q but the path tier %q", p.Tier, tier)
	}
	p.Tier = tier
	if err := p.Check(); err != nil {
		return err
	}
	if err := s.store.SetRolloutPolicy(r.Context(), p); err != nil {
		return err
	}
	s.securityEvent(r, "rollout_policy_set", adminUser(r.Context()), "tier", tier)
	s.policiesChanged(r)
	return writeJSON(w, http.StatusOK, p)
}

func (s *Server) deleteRolloutPolicy(w http.ResponseWriter, r *http.Request) error {
	tier := r.PathValue("name")
	if err := server.CheckTierName(tier); err != nil {
		return err
	}
	if err := s.store.DeleteRolloutPolicy(r.Context(), tier); err != nil {
		return err
	}
	s.securityEvent(r, "rollout_policy_delete", adminUser(r.Context()), "tier", tier)
	s.policiesChanged(r)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listRollouts(w http.ResponseWriter, r *http.Request) error {
	tier := r.PathValue("name")
	if err := server.CheckTierName(tier); err != nil {
		return err
	}
	rollouts, err := s.store.Rollouts(r.Context(), tier, s.opts.Now())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"rollouts": nonNil(rollouts)})
}

// rolloutResponse is a rollout with the update state of each machine offered its patch.
type rolloutResponse struct {
	server.Rollout
	MachineStates []server.RolloutMachine `json:"machine-states"`
}

func (s *Server) showRollout(w http.ResponseWriter, r *http.Request) error {
	tier, version := r.PathValue("name"), r.PathValue("version")
	if err := server.CheckTierName(tier); err != nil {
		return err
	}
	if err := server.CheckVersion(version); err != nil {
		return err
	}
	ro, err := s.findRollout(r, tier, version)
	if err != nil {
		return err
	}
	if ro == nil {
		return server.Errorf(server.CodeNotFound, "no rollout of %s in tier %q", version, tier)
	}
	machines, err := s.store.RolloutMachines(r.Context(), tier, version, s.opts.Now())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rolloutResponse{*ro, nonNil(machines)})
}

// findRollout returns the rollout of version in tier with its counts; nil when it has
// not started.
func (s *Server) findRollout(r *http.Request, tier, version string) (*server.Rollout, error) {
	rollouts, err := s.store.Rollouts(r.Context(), tier, s.opts.Now())
	if err != nil {
		return nil, err
	}
	for _, ro := range rollouts {
		if ro.Version == version {
			return &ro, nil
		}
	}
	return nil, nil
}

// rolloutActions maps the actions of POST .../rollouts/{version}/{action} to states.
var rolloutActions = map[string]string{
	"pause":  server.RolloutPaused,
	"resume": server.RolloutActive,
	"halt":   server.RolloutHalted,
}

type rolloutStateRequest struct {
	Reason string `json:"reason,omitempty"`
}

// maxRolloutReason bounds the reason an operator gives.
const maxRolloutReason = 512

func (s *Server) setRolloutState(w http.ResponseWriter, r *http.Request) error {
	tier, version, action := r.PathValue("name"), r.PathValue("version"), r.PathValue("action")
	state, ok := rolloutActions[action]
	if !ok {
		return server.Errorf(server.CodeNotFound, "unknown rollout action %.32q: want pause, resume or halt", action)
	}
	if err := server.CheckTierName(tier); err != nil {
		return err
	}
	if err := server.CheckVersion(version); err != nil {
		return err
	}
	var req rolloutStateRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	if len(req.Reason) > maxRolloutReason {
		return server.Errorf(server.CodeInvalid, "reason is longer than %d bytes", maxRolloutReason)
	}
	if req.Reason == "" && state != server.RolloutActive {
		req.Reason = action + " by " + adminUser(r.Context())
	}
	if state == server.RolloutActive {
		req.Reason = ""
	}
	changed, err := s.store.SetRolloutState(r.Context(), tier, version, state, req.Reason, s.opts.Now())
	if err != nil {
		return err
	}
	s.securityEvent(r, "rollout_"+action, adminUser(r.Context()), "tier", tier, "version", version, "reason", req.Reason)
	s.refreshRollouts(r.Context())
	return writeJSON(w, http.StatusOK, map[string]any{"tier": tier, "version": version, "state": state, "changed": changed})
}

// policiesChanged reloads the catalog, which holds the policies, and the rollout state
// after a change of policy made through this unit.
func (s *Server) policiesChanged(r *http.Request) {
	if err := s.catalog.reload(r.Context()); err != nil {
		s.log.Warn("Cannot reload patch catalog", "error", err)
	}
	s.refreshRollouts(r.Context())
}
