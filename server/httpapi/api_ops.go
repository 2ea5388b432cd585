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

// debugStatus reports the health of the database, the schema and patch storage; it
// answers 503 when something is wrong so haproxy and update-status can act on it.
func (s *Server) debugStatus(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	healthy := true
	check := func(err error) string {
		if err != nil {
			healthy = false
			// Public: a driver or transport error may quote a URL with credentials.
			return config.Redact(err.Error())
		}
		return server.HealthOK
	}
	out := server.Health{Version: s.opts.Version}
	out.Database.Status = check(s.store.Ping(ctx))
	current, latest, err := s.store.SchemaVersion(ctx)
	out.Schema = server.SchemaHealth{Current: current, Latest: latest, Status: server.HealthOK}
	if err != nil {
		out.Schema.Status = check(err)
	} else if current < latest {
		healthy = false
		out.Schema.Status = fmt.Sprintf("schema upgrade required: current %d, latest %d", current, latest)
	}
	out.PatchStorage.Status = check(s.storageHealth(ctx))
	out.Patches = len(s.catalog.get().byFile)
	if s.cache != nil {
		files := s.cache.len()
		out.PatchCache = server.PatchCacheHealth{Enabled: true, Files: &files}
	}
	out.Sync = server.SyncHealth{Status: "disabled"}
	if s.opts.Sync != nil {
		out.Sync = s.opts.Sync.Health(ctx)
	}
	// Without a contracts server, only sync tokens sync from this server.
	out.Contracts = server.ContractsHealth{Status: server.HealthOK}
	if s.opts.ContractsHealth != nil {
		out.Contracts = s.opts.ContractsHealth()
	}
	out.Status = server.HealthOK
	status := http.StatusOK
	if !healthy {
		out.Status = server.HealthDegraded
		status = http.StatusServiceUnavailable
	}
	return writeJSON(w, status, out)
}
