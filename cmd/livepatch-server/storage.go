package main

import (
	"database/sql"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/config"
	"github.com/livepatch-onprem/livepatch/server/patchstore"
)

// openPatchFiles returns the patch store the configuration names; db is the server's
// database, which the postgres store keeps files in.
func openPatchFiles(s config.PatchStorage, db *sql.DB) (server.PatchFiles, error) {
	switch s.Type {
	case config.StorageFilesystem:
		return patchstore.NewFilesystem(s.FilesystemPath)
	case config.StorageS3:
		return patchstore.NewS3(s3Options(s))
	default:
		return patchstore.NewPostgres(db), nil
	}
}

// s3Options returns the options of the s3 store the configuration names.
func s3Options(s config.PatchStorage) patchstore.S3Options {
	return patchstore.S3Options{
		Endpoint: s.S3Endpoint, Region: s.S3Region, Bucket: s.S3Bucket, Prefix: s.S3PathPrefix,
		AccessKey: s.S3AccessKey, SecretKey: s.S3SecretKey, CAFile: s.S3CAFile, PathStyle: s.S3PathStyle,
	}
}
