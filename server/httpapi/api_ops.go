package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/config"
)

func (s *Server) banner(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "Canonical Livepatch on-prem server, version %s\n", s.opts.Version)
	return nil
}

func (s *Server) debugInfo(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]string{"version": s.opts.Version})
}

// storageHealth reports patch storage unhealthy when it cannot be listed, or when it holds
// no patch file while patches are recorded: an unmounted volume, where every download
// would be a 404.
func (s *Server) storageHealth(ctx context.Context) error {
	var files []server.StoredFile
	var err error
	if h, ok := s.files.(storageSampler); ok {
		files, err = h.Sample(ctx) // an object store: listing a whole bucket would be slow
	} else {
		files, err = s.files.List(ctx)
	}
	if err != nil {
		if server.ErrorCode(err) == server.CodeInternal {
			s.log.Warn("Cannot list patch storage", "error", err)
			return errors.New("cannot list patch storage")
		}
		return errors.New(server.ErrorMessage(err))
	}
	if n := len(s.catalog.get().byFile); len(files) == 0 && n > 0 {
		return fmt.Errorf("patch storage holds no patch files but %d are recorded: is its volume mounted?", n)
	}
	return nil
}

// storageSampler is patch storage that can list some of its files cheaply (patchstore.S3),
// enough for storageHealth to tell an empty store from one that holds patches.
type storageSampler interface {
	Sample(ctx context.Context) ([]server.StoredFile, error)
}

type componentStatus struct {
	Status string `json:"status"`
}

// debugStatus reports the health of the database, the schema and patch storage; it
// answers 503 when something is wrong so haproxy and update-status can act on it.
func (s *Server) debugStatus(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	healthy := true
	check := func(err error) componentStatus {
		if err != nil {
			healthy = false
			// Public: a driver or transport error may quote a URL with credentials.
			return componentStatus{Status: config.Redact(err.Error())}
		}
		return componentStatus{Status: "OK"}
	}
	out := map[string]any{"version": s.opts.Version}
	out["database"] = check(s.store.Ping(ctx))
	current, latest, err := s.store.SchemaVersion(ctx)
	schema := map[string]any{"current": current, "latest": latest}
	if err != nil {
		schema["status"] = check(err).Status
	} else if current < latest {
		healthy = false
		schema["status"] = fmt.Sprintf("schema upgrade required: current %d, latest %d", current, latest)
	} else {
		schema["status"] = "OK"
	}
	out["schema"] = schema
	out["patch-storage"] = check(s.storageHealth(ctx))
	out["patches"] = len(s.catalog.get().byFile)
	cache := map[string]any{"enabled": s.cache != nil}
	if s.cache != nil {
		cache["files"] = s.cache.len()
	}
	out["patch-cache"] = cache
	out["sync"] = map[string]any{"enabled": false, "status": "disabled"}
	// Without a contracts server (the Status hook says otherwise when one checks resource
	// tokens).
	out["contracts"] = map[string]any{"status": "OK", "enabled": false}
	if s.opts.Status != nil {
		for k, v := range s.opts.Status(ctx) {
			out[k] = v
		}
	}
	out["status"] = "OK"
	status := http.StatusOK
	if !healthy {
		out["status"] = "degraded"
		status = http.StatusServiceUnavailable
	}
	return writeJSON(w, status, out)
}
