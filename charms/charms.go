// Package charms packs the charm archives of this repository and validates them, and the
// bundle that deploys them, with github.com/juju/charm/v12, the library Juju itself uses.
// The charm sources are the directories next to this file (livepatch, ubuntu-advantage);
// `make charms` stages each with its dispatch binary and runs cmd pack (charms/pack).
package charms

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/juju/charm/v12"
	"gopkg.in/yaml.v3"
)

// charmcraft is the part of charmcraft.yaml the manifest is made from.
type charmcraft struct {
	Platforms map[string]struct {
		BuildFor []string `yaml:"build-for"`
	} `yaml:"platforms"`
}

// manifestBase is one base of manifest.yaml.
type manifestBase struct {
	Name          string   `yaml:"name"`
	Channel       string   `yaml:"channel"`
	Architectures []string `yaml:"architectures"`
}

// Manifest returns manifest.yaml for the platforms of charmcraft.yaml, as charmcraft writes it.
func Manifest(charmcraftYAML []byte) ([]byte, error) {
	var cc charmcraft
	if err := yaml.Unmarshal(charmcraftYAML, &cc); err != nil {
		return nil, fmt.Errorf("cannot parse charmcraft.yaml: %w", err)
	}
	var bases []manifestBase
	for _, name := range slices.Sorted(maps.Keys(cc.Platforms)) {
		for _, target := range cc.Platforms[name].BuildFor {
			// ubuntu@22.04:amd64
			base, arch, ok := strings.Cut(target, ":")
			distro, channel, ok2 := strings.Cut(base, "@")
			if !ok || !ok2 {
				return nil, fmt.Errorf("cannot parse build-for %q of platform %q", target, name)
			}
			bases = append(bases, manifestBase{Name: distro, Channel: channel, Architectures: []string{arch}})
		}
	}
	if len(bases) == 0 {
		return nil, errors.New("charmcraft.yaml has no platforms")
	}
	var buf bytes.Buffer
	buf.WriteString("# Written by make charms from charmcraft.yaml.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(map[string]any{"bases": bases}); err != nil {
		return nil, fmt.Errorf("cannot render manifest.yaml: %w", err)
	}
	return buf.Bytes(), nil
}

// Pack writes manifest.yaml into the staged charm directory dir (from its charmcraft.yaml,
// which stays out of the archive) and archives dir to out.
func Pack(dir, out string) error {
	cc, err := os.ReadFile(filepath.Join(dir, "charmcraft.yaml"))
	if err != nil {
		return fmt.Errorf("cannot pack %s: %w", dir, err)
	}
	manifest, err := Manifest(cc)
	if err != nil {
		return fmt.Errorf("cannot pack %s: %w", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.yaml"), manifest, 0o644); err != nil {
		return fmt.Errorf("cannot pack %s: %w", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".jujuignore"), []byte("/charmcraft.yaml\n"), 0o644); err != nil {
		return fmt.Errorf("cannot pack %s: %w", dir, err)
	}
	cd, err := charm.ReadCharmDir(dir)
	if err != nil {
		return fmt.Errorf("cannot read charm %s: %w", dir, err)
	}
	if err := charm.CheckMeta(cd); err != nil {
		return fmt.Errorf("invalid charm %s: %w", dir, err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w", out, err)
	}
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("cannot create %s: %w", out, err)
	}
	if err := cd.ArchiveTo(f); err != nil {
		f.Close()
		return fmt.Errorf("cannot archive %s: %w", dir, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("cannot write %s: %w", out, err)
	}
	return nil
}

// Validate reads the charm archive at path and checks it as Juju would at deploy time, plus
// what our charms need: a v2 charm (manifest bases), an executable dispatch, config defaults
// that pass the config's own validation, an operator-facing description on every option and
// action, and action schemas that accept their own defaults. It returns the charm and the
// archive's member modes.
func Validate(path string) (*charm.CharmArchive, map[string]fs.FileMode, error) {
	ca, err := charm.ReadCharmArchive(path)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot read charm archive %s: %w", path, err)
	}
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if err := charm.CheckMeta(ca); err != nil {
		add("metadata: %v", err)
	}
	if f := charm.MetaFormat(ca); f != charm.FormatV2 {
		add("charm format %v, want v2 (manifest.yaml with bases, no series)", f)
	}
	members, err := archiveModes(path)
	if err != nil {
		return nil, nil, err
	}
	if mode, ok := members["dispatch"]; !ok {
		add("no dispatch")
	} else if mode.Perm()&0o111 == 0 {
		add("dispatch is not executable (%v)", mode)
	}
	if _, ok := members["charmcraft.yaml"]; ok {
		add("charmcraft.yaml is in the archive")
	}
	if cfg := ca.Config(); cfg != nil {
		if _, err := cfg.ValidateSettings(cfg.DefaultSettings()); err != nil {
			add("config defaults: %v", err)
		}
		for name, opt := range cfg.Options {
			if strings.TrimSpace(opt.Description) == "" {
				add("config option %s has no description", name)
			}
			if opt.Default == nil {
				add("config option %s has no default", name)
			}
		}
	}
	if acts := ca.Actions(); acts != nil {
		for name, spec := range acts.ActionSpecs {
			if strings.TrimSpace(spec.Description) == "" {
				add("action %s has no description", name)
			}
			defaults, err := spec.InsertDefaults(map[string]any{})
			if err != nil {
				add("action %s: cannot insert defaults: %v", name, err)
				continue
			}
			required, _ := spec.Params["required"].([]any)
			if len(required) == 0 {
				if err := spec.ValidateParams(defaults); err != nil {
					add("action %s rejects its own defaults: %v", name, err)
				}
			}
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return nil, nil, fmt.Errorf("invalid charm %s:\n- %s", path, strings.Join(problems, "\n- "))
	}
	return ca, members, nil
}

// archiveModes returns the modes of the members of a zip archive.
func archiveModes(path string) (map[string]fs.FileMode, error) {
	zr, err := zip.OpenReader(path)
	if err != nil {
		return nil, fmt.Errorf("cannot open %s: %w", path, err)
	}
	defer zr.Close()
	modes := map[string]fs.FileMode{}
	for _, f := range zr.File {
		modes[strings.TrimSuffix(f.Name, "/")] = f.Mode()
	}
	return modes, nil
}

// ReadPublicCharms reads the metadata fixtures of the public charms (dir/<name>), keyed by
// name, for verifying the bundle without the charm store.
func ReadPublicCharms(dir string) (map[string]charm.Charm, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("cannot read public charm fixtures: %w", err)
	}
	out := map[string]charm.Charm{}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		cd, err := charm.ReadCharmDir(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("cannot read public charm fixture %s: %w", e.Name(), err)
		}
		out[e.Name()] = cd
	}
	return out, nil
}

// VerifyBundle verifies the bundle at bundlePath with charm v12's VerifyWithCharms, taking
// each application's charm from charms (keyed by charm name: "haproxy", "livepatch", ...).
// When overlayPath is set, the overlay's applications are applied first (their charm paths
// replaced by the archives in localCharms, keyed by application), as `juju deploy --overlay`
// does.
func VerifyBundle(bundlePath, overlayPath string, charms map[string]charm.Charm, localCharms map[string]string) error {
	data, err := os.ReadFile(bundlePath)
	if err != nil {
		return fmt.Errorf("cannot read bundle: %w", err)
	}
	bd, err := charm.ReadBundleData(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("cannot parse bundle %s: %w", bundlePath, err)
	}
	byCharmString := map[string]charm.Charm{}
	for app, spec := range bd.Applications {
		name := strings.TrimPrefix(spec.Charm, "ch:")
		ch, ok := charms[name]
		if !ok {
			return fmt.Errorf("no charm %q for application %q of the bundle", name, app)
		}
		byCharmString[spec.Charm] = ch
	}
	if overlayPath != "" {
		overlay, err := os.ReadFile(overlayPath)
		if err != nil {
			return fmt.Errorf("cannot read overlay: %w", err)
		}
		var doc struct {
			Applications map[string]struct {
				Charm string `yaml:"charm"`
			} `yaml:"applications"`
		}
		if err := yaml.Unmarshal(overlay, &doc); err != nil {
			return fmt.Errorf("cannot parse overlay %s: %w", overlayPath, err)
		}
		for app, o := range doc.Applications {
			spec, ok := bd.Applications[app]
			if !ok {
				return fmt.Errorf("overlay application %q is not in the bundle", app)
			}
			if o.Charm == "" {
				continue
			}
			archive, ok := localCharms[app]
			if !ok {
				return fmt.Errorf("no built charm for overlay application %q (%s)", app, o.Charm)
			}
			abs, err := filepath.Abs(archive)
			if err != nil {
				return err
			}
			ca, err := charm.ReadCharmArchive(abs)
			if err != nil {
				return fmt.Errorf("cannot read %s: %w", abs, err)
			}
			spec.Charm = abs
			byCharmString[abs] = ca
		}
	}
	if err := bd.VerifyWithCharms(nil, nil, nil, byCharmString); err != nil {
		return fmt.Errorf("invalid bundle %s: %w", bundlePath, err)
	}
	return nil
}

// CheckPins checks that every application of the bundle at bundlePath whose charm is one of
// public (the fixtures ReadPublicCharms read, keyed by name) is pinned to a channel and to
// the revision of its fixture (the fixture's revision file), so that the options the bundle
// sets are checked against the config of the revision it deploys.
func CheckPins(bundlePath string, public map[string]charm.Charm) error {
	data, err := os.ReadFile(bundlePath)
	if err != nil {
		return fmt.Errorf("cannot read bundle: %w", err)
	}
	bd, err := charm.ReadBundleData(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("cannot parse bundle %s: %w", bundlePath, err)
	}
	var problems []string
	for _, app := range slices.Sorted(maps.Keys(bd.Applications)) {
		spec := bd.Applications[app]
		ch, ok := public[strings.TrimPrefix(spec.Charm, "ch:")]
		if !ok {
			continue
		}
		switch {
		case spec.Channel == "":
			problems = append(problems, fmt.Sprintf("application %q (charm %s) has no channel", app, spec.Charm))
		case spec.Revision == nil:
			problems = append(problems, fmt.Sprintf("application %q (charm %s) has no revision", app, spec.Charm))
		case *spec.Revision != ch.Revision():
			problems = append(problems, fmt.Sprintf("application %q is pinned to revision %d of %s, but the fixture is of revision %d", app, *spec.Revision, spec.Charm, ch.Revision()))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("bundle %s does not pin its public charms:\n- %s", bundlePath, strings.Join(problems, "\n- "))
	}
	return nil
}
