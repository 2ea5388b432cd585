package httpapi

import "context"

// DownloadsInProgress is the number of downloads holding a download slot.
func (s *Server) DownloadsInProgress() int { return len(s.downloads) }

// RefreshRollouts runs one catalog and rollout refresh now, as Run does periodically.
func (s *Server) RefreshRollouts(ctx context.Context) error {
	if err := s.catalog.refresh(ctx); err != nil {
		return err
	}
	return s.rollouts.refresh(ctx, s.opts.Now)
}

// RolloutsHeld returns the rollouts whose state this unit holds in memory (tier/version)
// with the number of machines it knows were offered each.
func (s *Server) RolloutsHeld() map[string]int {
	s.rollouts.mu.Lock()
	defer s.rollouts.mu.Unlock()
	out := map[string]int{}
	for k, rs := range s.rollouts.rollouts {
		out[k.Tier+"/"+k.Version] = len(rs.offered)
	}
	return out
}
