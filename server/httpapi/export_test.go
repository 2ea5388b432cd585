package httpapi

// DownloadsInProgress is the number of downloads holding a download slot.
func (s *Server) DownloadsInProgress() int { return len(s.downloads) }
