package httpapi

import (
	"net/http"
)

// redirectDownload answers a download with a 307 to the object store's presigned URL of
// the file (patch-storage.redirect-downloads). The URL expires soon, so the answer must
// not be cached; the machine checks the size and SHA-256 of what it fetches there as it
// does for a streamed download.
func (s *Server) redirectDownload(w http.ResponseWriter, r *http.Request, filename string) error {
	u, err := s.opts.DownloadRedirect(r.Context(), filename)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u.String(), http.StatusTemporaryRedirect)
	return nil
}
