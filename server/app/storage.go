package app

import (
	"context"
	"database/sql"
	"net/url"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/config"
	"github.com/livepatch-onprem/livepatch/server/patchstore"
)

// OpenPatchFiles returns the patch store the configuration names; db is the server's
// database, which the postgres store keeps files in.
func OpenPatchFiles(s config.PatchStorage, db *sql.DB) (server.PatchFiles, error) {
	switch s.Type {
	case config.StorageFilesystem:
		return patchstore.NewFilesystem(s.FilesystemPath)
	case config.StorageS3:
		return patchstore.NewS3(S3Options(s))
	default:
		return patchstore.NewPostgres(db), nil
	}
}

// S3Options returns the options of the s3 store the configuration names.
func S3Options(s config.PatchStorage) patchstore.S3Options {
	return patchstore.S3Options{
		Endpoint: s.S3Endpoint, Region: s.S3Region, Bucket: s.S3Bucket, Prefix: s.S3PathPrefix,
		AccessKey: s.S3AccessKey, SecretKey: s.S3SecretKey, CAFile: s.S3CAFile, PathStyle: s.S3PathStyle,
	}
}

// redirectTTL is how long a redirected download's presigned URL stays valid: the machine
// follows the redirect at once, and asks the server again when it retries.
const redirectTTL = 5 * time.Minute

// downloadRedirect returns the download redirect of patch-storage.redirect-downloads, nil
// when downloads are streamed.
func downloadRedirect(s config.PatchStorage, files server.PatchFiles) func(ctx context.Context, filename string) (*url.URL, error) {
	s3, ok := files.(*patchstore.S3)
	if !s.RedirectDownloads || !ok {
		return nil
	}
	return func(ctx context.Context, filename string) (*url.URL, error) {
		return s3.DownloadURL(ctx, filename, redirectTTL)
	}
}
