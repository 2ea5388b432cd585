package patchstore_test

import (
	"bytes"
	"io"
	"testing"

	"github.com/livepatch-onprem/livepatch/internal/s3test"
	"github.com/livepatch-onprem/livepatch/server/patchstore"
)

// benchSize is the size of the file the benchmarks move: a large patch.
const benchSize = 32 << 20

// BenchmarkS3Put measures uploads to a real S3 server (multipart, 8 MiB parts). The
// first upload is left out: a fresh SeaweedFS grows its volumes on the first writes, which
// run two to three times slower than the steady state measured.
func BenchmarkS3Put(b *testing.B) {
	s, err := patchstore.NewS3(s3test.Store(b))
	if err != nil {
		b.Fatal(err)
	}
	data := content(benchSize, 1)
	if _, err := s.Put(b.Context(), fileA, bytes.NewReader(data)); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchSize)
	for b.Loop() {
		if _, err := s.Put(b.Context(), fileA, bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkS3Read measures whole-file reads from a real S3 server.
func BenchmarkS3Read(b *testing.B) {
	s, err := patchstore.NewS3(s3test.Store(b))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Put(b.Context(), fileA, bytes.NewReader(content(benchSize, 1))); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchSize)
	for b.Loop() {
		f, err := s.Open(b.Context(), fileA)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, f); err != nil || n != benchSize {
			b.Fatalf("read %d bytes: %v", n, err)
		}
		f.Close()
	}
}
