// Package patchfile reads and writes livepatch patch archives: a bzip2-compressed tar
// holding metadata.json and the kernel module <module>.ko. The server checks uploads and
// synced files with Check, the client checks downloads the same way, and Generate makes
// realistic archives for tests, demos and benchmarks.
package patchfile

import (
	"archive/tar"
	"bytes"
	"compress/bzip2"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path"
	"strings"

	dsnetbzip2 "github.com/dsnet/compress/bzip2"

	"github.com/livepatch-onprem/livepatch/server"
)

// Limits on what an archive may hold; anything beyond is rejected as malformed. Every
// entry is bounded before it is read or skipped (skipping an entry decompresses it), and
// so is the whole decompressed stream, so that a small archive cannot cost a reader more
// than these bounds allow (a bzip2 bomb).
const (
	MaxMetadataSize = 64 << 10
	MaxModuleSize   = 256 << 20
	// MaxOtherSize bounds each entry that is neither metadata.json nor a module
	// (signatures, notes): they are ignored, but skipping them decompresses them.
	MaxOtherSize = 1 << 20
	MaxEntries   = 16
	// MaxDecompressed bounds the whole decompressed tar stream: one module at most, the
	// metadata, the other entries and the tar headers.
	MaxDecompressed = MaxModuleSize + MaxMetadataSize + MaxEntries*MaxOtherSize + MaxEntries*4<<10
	// MaxExpansion bounds how many decompressed bytes one compressed byte may give once
	// ExpansionFloor bytes are decompressed: real modules compress a few times, a bomb
	// millions of times.
	MaxExpansion   = 64
	ExpansionFloor = 16 << 20
	MetadataName   = "metadata.json"
)

// bounded is the decompressed stream of an archive, failing once it passes the limits.
type bounded struct {
	r   io.Reader     // the decompressed stream
	in  *countReader  // the compressed stream, counted
	n   int64         // decompressed bytes so far
	err *server.Error // the limit passed, once it is
}

func newBounded(r io.Reader) *bounded {
	in := &countReader{r: r}
	return &bounded{r: bzip2.NewReader(in), in: in}
}

func (b *bounded) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	switch {
	case b.n > MaxDecompressed:
		b.err = invalidError("it decompresses to more than %d bytes", int64(MaxDecompressed))
	case b.n > ExpansionFloor && b.n > b.in.n*MaxExpansion:
		b.err = invalidError("it decompresses to more than %d times its size", MaxExpansion)
	}
	if b.err != nil {
		return n, b.err
	}
	return n, err
}

// fail returns the limit error when the stream passed a limit, else err.
func (b *bounded) fail(err error) error {
	if b.err != nil {
		return b.err
	}
	return err
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Info is what an archive holds.
type Info struct {
	Metadata     server.Metadata
	ModuleSize   int64
	ModuleSHA256 string
}

func invalid(format string, args ...any) error {
	return invalidError(format, args...)
}

func invalidError(format string, args ...any) *server.Error {
	return server.Errorf(server.CodeInvalid, "invalid patch archive: "+format, args...)
}

// Read parses an archive and returns its metadata and module digest. It reads r to the
// end of the tar stream; errors are server.Error with CodeInvalid and say what is wrong.
func Read(r io.Reader) (Info, error) {
	var (
		info     Info
		metaSeen bool
		modules  = map[string]struct {
			size int64
			sum  string
		}{}
	)
	stream := newBounded(r)
	tr := tar.NewReader(stream)
	for n := 0; ; n++ {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Info{}, stream.fail(invalid("not a bzip2-compressed tar: %v", err))
		}
		if n >= MaxEntries {
			return Info{}, invalid("more than %d entries", MaxEntries)
		}
		if h.Size < 0 {
			return Info{}, invalid("entry %q has a negative size", h.Name)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if h.Typeflag == tar.TypeDir {
			continue
		}
		if h.Typeflag != tar.TypeReg {
			return Info{}, invalid("entry %q is not a regular file", h.Name)
		}
		if strings.Contains(name, "/") || strings.HasPrefix(name, ".") {
			return Info{}, invalid("entry %q is not a plain file name", h.Name)
		}
		switch {
		case name == MetadataName:
			if metaSeen {
				return Info{}, invalid("two %s entries", MetadataName)
			}
			metaSeen = true
			if h.Size > MaxMetadataSize {
				return Info{}, invalid("%s is larger than %d bytes", MetadataName, MaxMetadataSize)
			}
			data, err := io.ReadAll(io.LimitReader(tr, MaxMetadataSize+1))
			if err != nil {
				return Info{}, stream.fail(invalid("cannot read %s: %v", MetadataName, err))
			}
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&info.Metadata); err != nil {
				return Info{}, invalid("%s is not valid: %v", MetadataName, err)
			}
		case strings.HasSuffix(name, ".ko"):
			if h.Size > MaxModuleSize {
				return Info{}, invalid("module %q is larger than %d bytes", name, MaxModuleSize)
			}
			hash := sha256.New()
			size, err := io.Copy(hash, io.LimitReader(tr, MaxModuleSize+1))
			if err != nil {
				return Info{}, stream.fail(invalid("cannot read module %q: %v", name, err))
			}
			modules[strings.TrimSuffix(name, ".ko")] = struct {
				size int64
				sum  string
			}{size, hex.EncodeToString(hash.Sum(nil))}
		default:
			// Other files (signatures, notes) are allowed and ignored, once bounded:
			// the next entry skips them by decompressing them.
			if h.Size > MaxOtherSize {
				return Info{}, invalid("entry %q is larger than %d bytes", name, MaxOtherSize)
			}
		}
	}
	if !metaSeen {
		return Info{}, invalid("no %s", MetadataName)
	}
	m := info.Metadata
	if m.Module == "" {
		return Info{}, invalid("%s does not name a module", MetadataName)
	}
	mod, ok := modules[m.Module]
	if !ok {
		return Info{}, invalid("module %s.ko named by %s is missing", m.Module, MetadataName)
	}
	if mod.size == 0 {
		return Info{}, invalid("module %s.ko is empty", m.Module)
	}
	info.ModuleSize, info.ModuleSHA256 = mod.size, mod.sum
	return info, nil
}

// Check reads an archive and checks that its metadata agrees with filename.
func Check(r io.Reader, filename string) (Info, error) {
	name, err := server.ParsePatchFilename(filename)
	if err != nil {
		return Info{}, err
	}
	info, err := Read(r)
	if err != nil {
		return Info{}, err
	}
	if err := info.Metadata.Check(name); err != nil {
		return Info{}, err
	}
	return info, nil
}

// entryLimit is the largest size an entry of that (cleaned) name may have.
func entryLimit(name string) int64 {
	switch {
	case name == MetadataName:
		return MaxMetadataSize
	case strings.HasSuffix(name, ".ko"):
		return MaxModuleSize
	}
	return MaxOtherSize
}

// Module extracts the bytes of <module>.ko from an archive.
func Module(r io.Reader, module string) ([]byte, error) {
	stream := newBounded(r)
	tr := tar.NewReader(stream)
	for n := 0; n < MaxEntries; n++ {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, stream.fail(invalid("not a bzip2-compressed tar: %v", err))
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if h.Size > entryLimit(name) {
			// Skipping it would decompress it; Read refuses such archives too.
			return nil, invalid("entry %q is larger than %d bytes", h.Name, entryLimit(name))
		}
		if name == module+".ko" && h.Typeflag == tar.TypeReg {
			data, err := io.ReadAll(io.LimitReader(tr, MaxModuleSize+1))
			if err != nil {
				return nil, stream.fail(invalid("cannot read module: %v", err))
			}
			if len(data) > MaxModuleSize {
				return nil, invalid("module %s.ko is too large", module)
			}
			return data, nil
		}
	}
	return nil, invalid("module %s.ko is missing", module)
}

// Generate writes a realistic archive for meta: metadata.json and a module of moduleSize
// bytes that starts with an ELF header and continues with pseudo-random (incompressible)
// content derived from the metadata, so the same inputs give the same bytes.
func Generate(w io.Writer, meta server.Metadata, moduleSize int) error {
	if meta.Module == "" {
		return errors.New("cannot generate patch: metadata names no module")
	}
	if moduleSize < 64 {
		moduleSize = 64
	}
	metaJSON, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return fmt.Errorf("cannot generate patch: %w", err)
	}
	bw, err := dsnetbzip2.NewWriter(w, &dsnetbzip2.WriterConfig{Level: 1})
	if err != nil {
		return fmt.Errorf("cannot generate patch: %w", err)
	}
	tw := tar.NewWriter(bw)
	put := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := put(MetadataName, metaJSON); err != nil {
		return fmt.Errorf("cannot generate patch: %w", err)
	}
	if err := put(meta.Module+".ko", moduleBytes(meta, moduleSize)); err != nil {
		return fmt.Errorf("cannot generate patch: %w", err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("cannot generate patch: %w", err)
	}
	if err := bw.Close(); err != nil {
		return fmt.Errorf("cannot generate patch: %w", err)
	}
	return nil
}

func moduleBytes(meta server.Metadata, size int) []byte {
	seed := sha256.Sum256([]byte(meta.Kernel + "/" + meta.Flavour + "/" + meta.Architecture + "/" + meta.Version))
	rng := rand.NewChaCha8(seed)
	b := make([]byte, size)
	rng.Read(b)
	copy(b, "\x7fELF\x02\x01\x01\x00")       // 64-bit little-endian ELF, as a .ko is
	binary.LittleEndian.PutUint16(b[16:], 1) // ET_REL: relocatable object
	return b
}

// Metadata returns realistic metadata for a patch: module name and fixes derived from the
// kernel and version, as upstream names them (livepatch_<version with underscores>).
func Metadata(kernel, flavour, version, arch string) server.Metadata {
	lsn := strings.ReplaceAll(version, ".", "-")
	return server.Metadata{
		Kernel:       kernel,
		Flavour:      flavour,
		Architecture: arch,
		Version:      version,
		Module:       strings.NewReplacer(".", "_", "-", "_").Replace("lkp_Ubuntu_" + kernel + "_" + flavour + "_" + version),
		Description:  "Livepatch for " + kernel + "-" + flavour + " (LSN-" + lsn + ")",
		Fixes: []server.Fix{
			{Name: "CVE-2024-" + fmt.Sprint(10000+len(kernel)*97+len(version)*13), Description: "use-after-free in netfilter nf_tables", Bug: "LP: #2060000"},
		},
	}
}

// MaxFileSize bounds a patch file listed by an upstream or held by an offline bundle, as
// uploads are bounded.
const MaxFileSize = MaxModuleSize + MaxMetadataSize + 1<<20

// CheckEntry checks that an entry of a signed patch list is coherent before its file is
// read: a valid filename that agrees with the kernel, flavour, version and architecture,
// a hex SHA-256, a size within MaxFileSize, and a well-formed origin signature if any.
func CheckEntry(p server.SyncPatch) error {
	name, err := server.ParsePatchFilename(p.Filename)
	if err != nil {
		return server.Errorf(server.CodeInvalid, "the upstream lists an invalid patch: %s", server.ErrorMessage(err))
	}
	if name.Kernel != p.Kernel || name.Flavour != p.Flavour || name.Version != p.Version || name.Architecture != p.Architecture {
		return server.Errorf(server.CodeInvalid, "the upstream lists %s with a kernel, flavour, version or architecture that its name does not have", p.Filename)
	}
	if len(p.SHA256) != 64 || strings.Trim(p.SHA256, "0123456789abcdef") != "" {
		return server.Errorf(server.CodeInvalid, "the upstream lists %s with an invalid sha256 %q", p.Filename, p.SHA256)
	}
	if p.Size <= 0 || p.Size > MaxFileSize {
		return server.Errorf(server.CodeInvalid, "the upstream lists %s with an invalid size %d", p.Filename, p.Size)
	}
	if p.Signature != nil {
		if err := p.Signature.Check(); err != nil {
			return server.Errorf(server.CodeInvalid, "the upstream lists %s with an %s", p.Filename, server.ErrorMessage(err))
		}
	}
	return nil
}
