package server

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Patch is one patch file: a livepatch module for one kernel ABI, flavour and architecture.
// Several files share a version (an LSN number such as "107.1"); admin operations that name
// a version (promote, block) act on every file of that version.
type Patch struct {
	Filename     string    `json:"filename"`
	Version      string    `json:"version"`
	Kernel       string    `json:"kernel"`
	Flavour      string    `json:"flavour"`
	Architecture string    `json:"architecture"`
	SHA256       string    `json:"sha256"`
	Size         int64     `json:"size"`
	Module       string    `json:"module"`
	Description  string    `json:"description,omitempty"`
	Fixes        []Fix     `json:"fixes,omitempty"`
	Tier         string    `json:"tier"` // the highest tier the patch has been promoted to
	Blocked      bool      `json:"blocked"`
	BlockReason  string    `json:"block-reason,omitempty"`
	Source       string    `json:"source"` // "upload" or "sync"
	CreatedAt    time.Time `json:"created-at"`
	// Signature is the signature of the origin of a synced patch, kept as the upstream
	// listed it; nil for uploads (a server with a signing key signs those itself when it
	// offers them) and for patches synced from upstreams that did not sign them.
	Signature *PatchSignature `json:"signature,omitempty"`
}

// Fix is one vulnerability a patch addresses.
type Fix struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Bug         string `json:"bug,omitempty"`
}

// Patch sources.
const (
	SourceUpload = "upload"
	SourceSync   = "sync"
)

// Metadata is the metadata.json document inside a patch archive.
type Metadata struct {
	Kernel       string `json:"kernel"`
	Flavour      string `json:"flavour"`
	Architecture string `json:"architecture"`
	Version      string `json:"version"`
	Module       string `json:"module"`
	Description  string `json:"description,omitempty"`
	Fixes        []Fix  `json:"fixes,omitempty"`
}

// PatchName is what a patch filename says about its contents.
type PatchName struct {
	Kernel       string // "5.15.0-107.117" or "5.15.0-107"
	Flavour      string // "generic", "lowlatency-64k", ...
	Version      string // "107.1"
	Architecture string // "amd64"
}

var (
	kernelRE  = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+-[0-9]+(\.[0-9]+)?$`)
	flavourRE = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)
	versionRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+)*$`)
	archRE    = regexp.MustCompile(`^[a-z0-9_]+$`)
	moduleRE  = regexp.MustCompile(`^[A-Za-z0-9_]+$`)
)

// PatchFileSuffix ends every patch filename.
const PatchFileSuffix = ".tar.bz2"

// ParsePatchFilename parses "livepatch-<kernel>-<flavour>-<version>-<arch>.tar.bz2".
func ParsePatchFilename(name string) (PatchName, error) {
	bad := func(why string) (PatchName, error) {
		return PatchName{}, Errorf(CodeInvalid, "invalid patch filename %q: %s (want livepatch-<kernel>-<flavour>-<version>-<arch>.tar.bz2)", name, why)
	}
	rest, ok := strings.CutPrefix(name, "livepatch-")
	if !ok {
		return bad(`it does not start with "livepatch-"`)
	}
	rest, ok = strings.CutSuffix(rest, PatchFileSuffix)
	if !ok {
		return bad(`it does not end with ".tar.bz2"`)
	}
	parts := strings.Split(rest, "-")
	if len(parts) < 5 {
		return bad("it has too few parts")
	}
	n := len(parts)
	p := PatchName{
		Kernel:       parts[0] + "-" + parts[1],
		Flavour:      strings.Join(parts[2:n-2], "-"),
		Version:      parts[n-2],
		Architecture: parts[n-1],
	}
	switch {
	case !kernelRE.MatchString(p.Kernel):
		return bad(fmt.Sprintf("kernel %q is not of the form x.y.z-abi[.build]", p.Kernel))
	case !flavourRE.MatchString(p.Flavour):
		return bad(fmt.Sprintf("flavour %q is not valid", p.Flavour))
	case !versionRE.MatchString(p.Version):
		return bad(fmt.Sprintf("version %q is not numeric", p.Version))
	case !archRE.MatchString(p.Architecture):
		return bad(fmt.Sprintf("architecture %q is not valid", p.Architecture))
	}
	return p, nil
}

// Filename returns the canonical filename of a patch.
func (p PatchName) Filename() string {
	return fmt.Sprintf("livepatch-%s-%s-%s-%s%s", p.Kernel, p.Flavour, p.Version, p.Architecture, PatchFileSuffix)
}

// Check reports whether metadata agrees with the filename and is complete.
func (m Metadata) Check(name PatchName) error {
	var problems []string
	agree := func(field, got, want string) {
		if got != want {
			problems = append(problems, fmt.Sprintf("%s is %q in metadata.json but %q in the filename", field, got, want))
		}
	}
	agree("kernel", m.Kernel, name.Kernel)
	agree("flavour", m.Flavour, name.Flavour)
	agree("version", m.Version, name.Version)
	agree("architecture", m.Architecture, name.Architecture)
	if !moduleRE.MatchString(m.Module) {
		problems = append(problems, fmt.Sprintf("module %q is not a kernel module name", m.Module))
	}
	if len(problems) > 0 {
		return Errorf(CodeInvalid, "patch metadata does not match: %s", strings.Join(problems, "; "))
	}
	return nil
}

// CompareVersions compares dotted numeric versions ("107.1" < "107.10" < "110.1").
// Missing parts count as zero; a non-numeric part compares as text.
func CompareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(as), len(bs)) {
		x, y := "0", "0"
		if i < len(as) {
			x = as[i]
		}
		if i < len(bs) {
			y = bs[i]
		}
		xi, errx := strconv.ParseUint(x, 10, 64)
		yi, erry := strconv.ParseUint(y, 10, 64)
		switch {
		case errx == nil && erry == nil && xi != yi:
			if xi < yi {
				return -1
			}
			return 1
		case (errx != nil || erry != nil) && x != y:
			return strings.Compare(x, y)
		}
	}
	return 0
}

// KernelABI strips the build number from a patch kernel: "5.15.0-107.117" -> "5.15.0-107".
func KernelABI(kernel string) string {
	dash := strings.LastIndexByte(kernel, '-')
	if dot := strings.IndexByte(kernel[dash+1:], '.'); dash >= 0 && dot >= 0 {
		return kernel[:dash+1+dot]
	}
	return kernel
}

// SplitKernelRelease splits a running kernel release as uname -r prints it
// ("5.15.0-107-generic", "6.8.0-31-lowlatency-64k") into its ABI and flavour.
// It allocates nothing: every check-in calls it.
func SplitKernelRelease(release string) (abi, flavour string, err error) {
	version, rest, ok := strings.Cut(release, "-")
	abiNum, flavour, ok2 := strings.Cut(rest, "-")
	kernel := release[:min(len(release), len(version)+1+len(abiNum))]
	if !ok || !ok2 || !kernelRE.MatchString(kernel) {
		return "", "", Errorf(CodeInvalid, "kernel release %q is not of the form x.y.z-abi-flavour", release)
	}
	return KernelABI(kernel), flavour, nil
}

// KernelAtLeast reports whether kernel ("5.15.0-107.117" or "5.15.0") is at least the
// x.y.z version min; an empty min allows everything.
func KernelAtLeast(kernel, min string) bool {
	if min == "" {
		return true
	}
	base, _, _ := strings.Cut(kernel, "-")
	return CompareVersions(base, min) >= 0
}
