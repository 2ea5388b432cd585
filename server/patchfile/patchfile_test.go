package patchfile_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	dsnetbzip2 "github.com/dsnet/compress/bzip2"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/patchfile"
)

const filename = "livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2"

func generate(t *testing.T, meta server.Metadata, size int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := patchfile.Generate(&buf, meta, size); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestGenerateCheckRoundTrip(t *testing.T) {
	meta := patchfile.Metadata("5.15.0-107.117", "generic", "107.1", "amd64")
	data := generate(t, meta, 100_000)
	info, err := patchfile.Check(bytes.NewReader(data), filename)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if info.ModuleSize != 100_000 || info.Metadata.Module != meta.Module {
		t.Errorf("info = %+v", info)
	}
	mod, err := patchfile.Module(bytes.NewReader(data), meta.Module)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(mod)
	if hex.EncodeToString(sum[:]) != info.ModuleSHA256 || !bytes.HasPrefix(mod, []byte("\x7fELF")) {
		t.Errorf("module digest or header wrong")
	}
	if again := generate(t, meta, 100_000); !bytes.Equal(again, data) {
		t.Errorf("Generate is not deterministic")
	}
}

// tarBZ2 builds an archive from name/content pairs.
func tarBZ2(t *testing.T, files ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	bw, err := dsnetbzip2.NewWriter(&buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(bw)
	for i := 0; i+1 < len(files); i += 2 {
		tw.WriteHeader(&tar.Header{Name: files[i], Mode: 0o644, Size: int64(len(files[i+1])), Typeflag: tar.TypeReg})
		tw.Write([]byte(files[i+1]))
	}
	tw.Close()
	bw.Close()
	return buf.Bytes()
}

func TestCheckRejects(t *testing.T) {
	good := `{"kernel":"5.15.0-107.117","flavour":"generic","architecture":"amd64","version":"107.1","module":"lkp"}`
	tests := []struct {
		name, filename string
		data           []byte
		want           string
	}{
		{"not bzip2", filename, []byte("hello"), "not a bzip2-compressed tar"},
		{"no metadata", filename, tarBZ2(t, "lkp.ko", "x"), "no metadata.json"},
		{"bad json", filename, tarBZ2(t, "metadata.json", "{", "lkp.ko", "x"), "metadata.json is not valid"},
		{"unknown field", filename, tarBZ2(t, "metadata.json", `{"kernel":"x","bogus":1}`), "unknown field"},
		{"missing module", filename, tarBZ2(t, "metadata.json", good), "module lkp.ko named by metadata.json is missing"},
		{"path entry", filename, tarBZ2(t, "../evil.ko", "x"), "is not a plain file name"},
		{"disagrees", "livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2", tarBZ2(t, "metadata.json", good, "lkp.ko", "x"), `version is "107.1" in metadata.json but "107.2" in the filename`},
		{"bad name", "patch.tar.bz2", tarBZ2(t, "metadata.json", good, "lkp.ko", "x"), `does not start with "livepatch-"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := patchfile.Check(bytes.NewReader(tt.data), tt.filename)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check error = %v, want it to contain %q", err, tt.want)
			}
			if server.ErrorCode(err) != server.CodeInvalid {
				t.Errorf("code = %v, want invalid", server.ErrorCode(err))
			}
		})
	}
}

// bomb returns an archive holding a valid metadata.json and module, then an entry named
// name whose size is mib MiB of zeros, as concatenated bzip2 streams (which bzip2 readers
// decompress as one): each MiB of zeros costs a few dozen compressed bytes.
func bomb(t *testing.T, name string, mib int) []byte {
	t.Helper()
	meta := patchfile.Metadata("5.15.0-107.117", "generic", "107.1", "amd64")
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	metaJSON := []byte(`{"kernel":"5.15.0-107.117","flavour":"generic","architecture":"amd64","version":"107.1","module":"` + meta.Module + `"}`)
	for _, f := range []struct {
		name string
		data []byte
	}{{patchfile.MetadataName, metaJSON}, {meta.Module + ".ko", []byte("\x7fELF module")}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(mib) << 20, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	compress := func(data []byte) []byte {
		var buf bytes.Buffer
		bw, err := dsnetbzip2.NewWriter(&buf, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bw.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := bw.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	out := compress(tarBuf.Bytes()) // the headers written so far
	zeros := compress(make([]byte, 1<<20))
	for range mib {
		out = append(out, zeros...)
	}
	return append(out, compress(make([]byte, 1024))...) // the end of the tar stream
}

// countingReader counts the compressed bytes a reader of the archive consumed.
type countingReader struct {
	r *bytes.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// A bzip2 bomb is refused before it is decompressed: an ignored entry of 2 GiB of zeros
// (the archive is 90 KB), a module far more compressed than any real one, and more
// entries than allowed. Check (the server's upload and sync, the client's verification)
// and Module (the client's extraction) stop early: most of the archive is never read.
func TestBombs(t *testing.T) {
	tests := []struct {
		name, entry string
		mib         int
		want        string
	}{
		{"ignored entry", "notes.txt", 2048, `entry "notes.txt" is larger than 1048576 bytes`},
		{"other module", "other.ko", 200, "decompresses to more than 64 times its size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := bomb(t, tt.entry, tt.mib)
			for name, read := range map[string]func(r *countingReader) error{
				"Check":  func(r *countingReader) error { _, err := patchfile.Check(r, filename); return err },
				"Module": func(r *countingReader) error { _, err := patchfile.Module(r, "nosuch"); return err },
			} {
				r := &countingReader{r: bytes.NewReader(data)}
				err := read(r)
				if server.ErrorCode(err) != server.CodeInvalid || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("%s: %v, want invalid with %q", name, err, tt.want)
				}
				if r.n > len(data)/2 {
					t.Errorf("%s read %d of the %d compressed bytes before refusing", name, r.n, len(data))
				}
			}
		})
	}
}
