package httpapi

import (
	"net/http"

	"github.com/livepatch-onprem/livepatch/server"
)

// recordDownstream records the telemetry of a downstream deployment's sync list request
// for the downstream report. Requests without a valid deployment id are not recorded; a
// failure is logged and never fails the list.
func (s *Server) recordDownstream(r *http.Request, c syncCaller) {
	if c.deployment == "" {
		return
	}
	d := server.DownstreamSync{DeploymentID: c.deployment, Via: server.ViaResourceToken, Credential: c.credential, Tier: c.tier, At: s.opts.Now()}
	if c.syncToken != "" {
		d.Via, d.SyncToken = server.ViaSyncToken, c.syncToken
	}
	if c.machines >= 0 {
		d.MachineCount = &c.machines
	}
	err := s.store.RecordDownstreamSync(r.Context(), d)
	if server.ErrorCode(err) == server.CodeConflict {
		// Another downstream's id: its record stays as it is; the list is still served
		// (patches matter more than telemetry), and its machine reports are refused.
		s.securityEvent(r, "sync_deployment_conflict", c.who, "deployment", c.deployment)
		return
	}
	if err != nil {
		s.log.Warn("Cannot record the sync of a downstream deployment", "deployment", c.deployment, "error", err)
	}
}

// reportDownstream lists the downstream deployments that synced from this server or
// reported machines to it.
func (s *Server) reportDownstream(w http.ResponseWriter, r *http.Request) error {
	deployments, err := s.store.Downstreams(r.Context(), s.opts.Now())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"deployments": nonNil(deployments)})
}

// reportDownstreamMachines lists the machines a downstream deployment reported
// (optionally of a tier, in a patch state), a page at a time with a keyset cursor.
func (s *Server) reportDownstreamMachines(w http.ResponseWriter, r *http.Request) error {
	limit, err := pageLimit(r)
	if err != nil {
		return err
	}
	f := server.DownstreamMachineFilter{
		DeploymentID: r.PathValue("id"),
		Tier:         queryValue(r, "tier"),
		PatchState:   queryValue(r, "state"),
		After:        queryValue(r, "after"),
		Limit:        limit,
	}
	if err := server.CheckDeploymentID(f.DeploymentID); err != nil {
		return err
	}
	if err := checkPatchState(f.PatchState); err != nil {
		return err
	}
	if f.Tier != "" {
		if err := server.CheckTierName(f.Tier); err != nil {
			return err
		}
	}
	machines, err := s.store.DownstreamMachines(r.Context(), f, s.opts.Now())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, newMachinePage(machines, f.Limit, func(m server.DownstreamMachine) string { return m.ID }))
}
