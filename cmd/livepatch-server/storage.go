package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/app"
	"github.com/livepatch-onprem/livepatch/server/config"
	"github.com/livepatch-onprem/livepatch/server/patchstore"
	"github.com/livepatch-onprem/livepatch/server/postgres"
)

// cmdStorageMigrate copies every stored patch file from the patch storage of one config
// to that of another (patchstore.Migrate), for an operator moving a site to S3. Both
// configs name the same database, whose records give the digests to verify against.
func cmdStorageMigrate(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("storage migrate", flag.ContinueOnError)
	fromPath := fs.String("from-config", "", "server config file of the current patch storage")
	toPath := fs.String("to-config", "", "server config file of the patch storage to copy to")
	format := fs.String("format", "text", "output format: text or json")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *fromPath == "" || *toPath == "" {
		return usageError{"storage migrate needs --from-config FILE and --to-config FILE"}
	}
	if *format != "text" && *format != "json" {
		return usageError{fmt.Sprintf("unknown format %q (want text or json)", *format)}
	}
	fromCfg, err := config.Load(*fromPath)
	if err != nil {
		return fmt.Errorf("%s: %w", *fromPath, err)
	}
	toCfg, err := config.Load(*toPath)
	if err != nil {
		return fmt.Errorf("%s: %w", *toPath, err)
	}
	if fromCfg.Database.ConnectionString != toCfg.Database.ConnectionString {
		return usageError{"the two configs name different databases: both must be the same deployment's"}
	}
	from, to := fromCfg.PatchStorage, toCfg.PatchStorage
	from.RedirectDownloads, to.RedirectDownloads = false, false
	if from == to {
		return usageError{"the two configs name the same patch storage"}
	}
	db, err := postgres.Open(ctx, fromCfg.Database.ConnectionString, postgres.Options{MaxConns: 4})
	if err != nil {
		return err
	}
	defer db.Close()
	src, err := app.OpenPatchFiles(from, db.SQL())
	if err != nil {
		return err
	}
	dst, err := app.OpenPatchFiles(to, db.SQL())
	if err != nil {
		return err
	}
	patches, err := db.Patches(ctx, server.PatchFilter{})
	if err != nil {
		return err
	}
	recorded := make(map[string]string, len(patches))
	for _, p := range patches {
		recorded[p.Filename] = p.SHA256
	}
	res, err := patchstore.Migrate(ctx, src, dst, recorded, db.LockPatchFile)
	if *format == "json" {
		if jerr := json.NewEncoder(stdout).Encode(res); jerr != nil && err == nil {
			err = jerr
		}
	} else {
		fmt.Fprintf(stdout, "copied %d, already there %d, skipped %d (not patch filenames), failed %d\n",
			len(res.Copied), len(res.Present), len(res.Skipped), len(res.Failed))
		for _, f := range res.Failed {
			fmt.Fprintf(stdout, "failed: %s\n", config.Redact(f.Error))
		}
	}
	if err != nil {
		return fmt.Errorf("migration interrupted (run it again to resume): %w", err)
	}
	if len(res.Failed) > 0 {
		return exitCode(1)
	}
	return nil
}

// checkTimeout bounds storage check: the charm runs it in a hook.
const checkTimeout = 30 * time.Second

// cmdStorageCheck checks that the patch storage of a config can be used: for s3, that the
// bucket exists and the credentials open it. It exits 3, with the reason on stderr, when
// the storage is unavailable (the charm shows it as its Blocked status), 1 on other
// errors. The postgres store is the database, which schema check checks.
func cmdStorageCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("storage check", flag.ContinueOnError)
	configPath := fs.String("config", "", "server config file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *configPath == "" {
		return usageError{"storage check needs --config FILE"}
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	switch cfg.PatchStorage.Type {
	case config.StorageS3:
		s, err := patchstore.NewS3(app.S3Options(cfg.PatchStorage))
		if err == nil {
			err = s.Check(ctx)
		}
		if server.ErrorCode(err) == server.CodeUnavailable || errors.Is(err, context.DeadlineExceeded) {
			fmt.Fprintf(stderr, "error: %s\n", config.Redact(err.Error()))
			return exitCode(3)
		}
		if err != nil {
			return err
		}
	case config.StorageFilesystem:
		s, err := patchstore.NewFilesystem(cfg.PatchStorage.FilesystemPath)
		if err != nil {
			return err
		}
		if _, err := s.List(ctx); server.ErrorCode(err) == server.CodeUnavailable {
			fmt.Fprintf(stderr, "error: %s\n", err)
			return exitCode(3)
		} else if err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "patch storage (%s) is usable\n", cfg.PatchStorage.Type)
	return nil
}
