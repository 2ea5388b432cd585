package httpapi

import "context"

// RefreshRollouts runs one catalog and rollout refresh now, as Run does periodically.
func (s *Server) RefreshRollouts(ctx context.Context) error {
	if err := s.catalog.refresh(ctx); err != nil {
		return err
	}
	return s.rollouts.refresh(ctx, s.opts.Now)
}
