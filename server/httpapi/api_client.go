package httpapi

import (
	"net/http"
	"strings"

	"github.com/livepatch-onprem/livepatch/server"
)

// checkInMinutes is the check-in interval advised to clients (the real client's default).
const checkInMinutes = 60

// machineTokenHeader carries, on an enable, the machine token the caller holds for the
// machine: re-enabling an enrolled machine needs it.
const machineTokenHeader = "Livepatch-Machine-Token"

// enableMachine enrols the machine named in the path with the auth token it presents and
// answers a per-machine token (stored hashed).
func (s *Server) enableMachine(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := server.CheckMachineID(id); err != nil {
		return err
	}
	var st server.Status
	if err := decodeJSON(w, r, &st, true); err != nil {
		return err
	}
	token := server.NewToken()
	e := server.Enrolment{
		AuthTokenHash:    server.HashToken(bearer(r)),
		MachineID:        id,
		MachineTokenHash: server.HashToken(token),
	}
	if current := strings.TrimSpace(r.Header.Get(machineTokenHeader)); current != "" {
		e.CurrentTokenHash = server.HashToken(current)
	}
	m, err := s.store.Enable(r.Context(), e, s.opts.Now())
	if err != nil {
		if c := server.ErrorCode(err); c == server.CodeUnauthorized || c == server.CodeForbidden || c == server.CodeConflict {
			s.securityEvent(r, "authtoken_enable_refused", "", "machine", id, "reason", server.ErrorMessage(err))
			s.metrics.authFails.WithLabelValues("auth").Inc()
		}
		return err
	}
	s.log.Info("Machine enabled", "machine", id, "tier", m.Tier, "token-id", m.TokenID)
	return writeJSON(w, http.StatusOK, server.EnableResponse{MachineToken: token, Tier: m.Tier})
}

// checkIn records a machine's status in one database round trip and answers the patch
// its tier offers for its kernel, chosen from the in-memory catalog.
func (s *Server) checkIn(w http.ResponseWriter, r *http.Request) error {
	m := machineOf(r)
	var st server.Status
	if err := decodeJSON(w, r, &st, false); err != nil {
		return err
	}
	if err := st.Check(); err != nil {
		return err
	}
	tier, err := s.store.CheckIn(r.Context(), server.CheckIn{
		MachineID:        m.id,
		MachineTokenHash: m.tokenHash,
		Status:           st,
	}, s.opts.Now())
	if err != nil {
		if server.ErrorCode(err) == server.CodeUnauthorized {
			s.machineTokens.remove(m.id, m.tokenHash)
			s.metrics.authFails.WithLabelValues("machine").Inc()
		}
		return err
	}
	// One snapshot serves the choice and the rollout's gate of it.
	snap := s.catalog.get()
	catalog := snap.catalog
	up := server.Update{
		Tier:        tier,
		KernelState: catalog.KernelState(st.Kernel, st.Architecture),
		Check:       server.CheckAdvice{IntervalMinutes: checkInMinutes},
	}
	p, ok := catalog.Select(tier, st.Kernel, st.Architecture)
	if ok {
		p, ok = s.rollouts.gate(snap, tier, m.id, st, p, s.opts.Now()) // rollout.go
	}
	if ok {
		up.Patch = server.Offer(p, s.opts.URLTemplate)
		s.metrics.checkins.WithLabelValues("patch").Inc()
	} else {
		s.metrics.checkins.WithLabelValues("none").Inc()
	}
	return writeJSON(w, http.StatusOK, up)
}

// removeMachine unregisters a machine for an administrator, whatever its token: the way
// back for a machine that lost its token.
func (s *Server) removeMachine(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := server.CheckMachineID(id); err != nil {
		return err
	}
	if err := s.store.RemoveMachine(r.Context(), id); err != nil {
		return err
	}
	s.securityEvent(r, "machine_remove", adminUser(r.Context()), "machine", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) disableMachine(w http.ResponseWriter, r *http.Request) error {
	m := machineOf(r)
	if err := s.store.Disable(r.Context(), m.id, m.tokenHash); err != nil {
		return err
	}
	s.machineTokens.remove(m.id, m.tokenHash)
	s.log.Info("Machine disabled", "machine", m.id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
