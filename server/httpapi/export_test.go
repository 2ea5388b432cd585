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
