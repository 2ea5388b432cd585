package jujusim

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/juju/charm/v12"
	"github.com/juju/loggo"
)

func init() {
	// charm v12 logs "making ... executable" warnings through loggo; keep test output clean.
	loggo.GetLogger("juju.charm").SetLogLevel(loggo.ERROR)
}

// StandinCharm is a built-in charm (metadata files plus a Go dispatch function run by the
// multi-call binary) that replaces a public charm we do not own.
type StandinCharm struct {
	Name  string
	Files fs.FS // metadata.yaml, config.yaml, actions.yaml, ...
	Main  func() int
}

var standins = map[string]StandinCharm{}

// RegisterStandin makes a stand-in charm deployable as "<name>" and "ch:<name>".
func RegisterStandin(s StandinCharm) {
	standins[s.Name] = s
	standinCharms[s.Name] = s.Main
}

// RegisterCommand makes the multi-call binary run f when invoked under name (pro, apt-get...).
func RegisterCommand(name string, f func(args []string) int) {
	multiCalls[name] = f
}

// resolveCharm maps a charm reference to a local path: Options.Charms first, then an existing
// path (relative to base when given), then the built-in stand-ins.
func (m *Model) resolveCharm(ref, base string) (string, error) {
	if p, ok := m.opts.Charms[ref]; ok {
		return p, nil
	}
	if strings.HasPrefix(ref, ".") || strings.HasPrefix(ref, "/") {
		p := ref
		if base != "" && !filepath.IsAbs(p) {
			p = filepath.Join(base, p)
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", fmt.Errorf("cannot resolve charm %q: %w", ref, err)
		}
		return abs, nil
	}
	name := strings.TrimPrefix(ref, "ch:")
	if s, ok := standins[name]; ok {
		return m.materializeStandin(s)
	}
	if _, err := os.Stat(ref); err == nil {
		return filepath.Abs(ref)
	}
	return "", fmt.Errorf("cannot resolve charm %q: not a local path, stand-in or Options.Charms entry", ref)
}

// materializeStandin writes a stand-in charm as a charm directory whose dispatch runs the
// multi-call binary.
func (m *Model) materializeStandin(s StandinCharm) (string, error) {
	dir := filepath.Join(m.dir, "standin-charms", s.Name)
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("cannot write stand-in charm %q: %w", s.Name, err)
	}
	if err := os.CopyFS(dir, s.Files); err != nil {
		return "", fmt.Errorf("cannot write stand-in charm %q: %w", s.Name, err)
	}
	dispatch := fmt.Sprintf("#!/bin/sh\nexec '%s' %s %s \"$@\"\n", m.toolBin, charmMarker, s.Name)
	if err := os.WriteFile(filepath.Join(dir, "dispatch"), []byte(dispatch), 0o755); err != nil {
		return "", fmt.Errorf("cannot write stand-in charm %q: %w", s.Name, err)
	}
	return dir, nil
}

// readCharm loads a charm directory or archive and validates it as Juju does (CheckMeta). It
// returns the charm and the archive Juju would store.
func readCharm(path string) (charm.Charm, []byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot read charm: %w", err)
	}
	var archive []byte
	if fi.IsDir() {
		dir, err := charm.ReadCharmDir(path)
		if err != nil {
			return nil, nil, fmt.Errorf("cannot read charm %s: %w", path, err)
		}
		if err := charm.CheckMeta(dir); err != nil {
			return nil, nil, fmt.Errorf("invalid charm %s: %w", path, err)
		}
		var buf bytes.Buffer
		if err := dir.ArchiveTo(&buf); err != nil {
			return nil, nil, fmt.Errorf("cannot archive charm %s: %w", path, err)
		}
		archive = buf.Bytes()
	} else if archive, err = os.ReadFile(path); err != nil {
		return nil, nil, fmt.Errorf("cannot read charm: %w", err)
	}
	ch, err := charm.ReadCharmArchiveBytes(archive)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot read charm %s: %w", path, err)
	}
	if err := charm.CheckMeta(ch); err != nil {
		return nil, nil, fmt.Errorf("invalid charm %s: %w", path, err)
	}
	if ch.Config() == nil {
		return nil, nil, fmt.Errorf("invalid charm %s: no config", path)
	}
	return ch, archive, nil
}

// unpackCharm expands a charm archive into dir, replacing what was there.
func unpackCharm(archive []byte, dir string) error {
	a, err := charm.ReadCharmArchiveBytes(archive)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return a.ExpandTo(dir)
}

// replaceCharm deploys archive over the charm in dir as Juju's manifest deployer does: the
// files of the old archive go, the new archive's come, any other file stays.
func replaceCharm(old, archive []byte, dir string) error {
	if _, err := charm.ReadCharmArchiveBytes(archive); err != nil {
		return err
	}
	zr, err := zip.NewReader(bytes.NewReader(old), int64(len(old)))
	if err != nil {
		return fmt.Errorf("cannot read the deployed charm: %w", err)
	}
	for _, f := range zr.File {
		if f.FileInfo().IsDir() {
			continue
		}
		p := filepath.Join(dir, filepath.FromSlash(f.Name))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			continue
		}
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	a, err := charm.ReadCharmArchiveBytes(archive)
	if err != nil {
		return err
	}
	return a.ExpandTo(dir)
}

// parseConfig validates deploy-time option values against config.yaml. Strings for non-string
// options are parsed as the CLI does.
func parseConfig(ch charm.Charm, values map[string]any) (charm.Settings, error) {
	cfg := ch.Config()
	out := charm.Settings{}
	strs := map[string]string{}
	for k, v := range values {
		opt, ok := cfg.Options[k]
		if !ok {
			return nil, fmt.Errorf("unknown option %q", k)
		}
		if s, isStr := v.(string); isStr && opt.Type != "string" && opt.Type != "secret" {
			strs[k] = s
			continue
		}
		out[k] = v
	}
	parsed, err := cfg.ParseSettingsStrings(strs)
	if err != nil {
		return nil, err
	}
	maps.Copy(out, parsed)
	return cfg.ValidateSettings(out)
}

// effectiveConfig is the charm defaults overlaid with the user's settings.
func effectiveConfig(ch charm.Charm, settings charm.Settings) charm.Settings {
	out := ch.Config().DefaultSettings()
	maps.Copy(out, settings)
	return out
}

func equalSettings(a, b charm.Settings) bool { return reflect.DeepEqual(a, b) }

// DeployBundle deploys a bundle file with optional overlays (and the bundle's own extra YAML
// documents as overlays), after verifying it with the charms as Juju does.
func (m *Model) DeployBundle(path string, overlays ...string) error {
	base := filepath.Dir(path)
	src, err := charm.LocalBundleDataSource(path)
	if err != nil {
		return fmt.Errorf("cannot read bundle: %w", err)
	}
	parts := src.Parts()
	if len(parts) == 0 {
		return fmt.Errorf("cannot read bundle %s: empty", path)
	}
	for _, p := range parts {
		if p.UnmarshallError != nil {
			m.logf("", "WARNING", "bundle %s: %v", path, p.UnmarshallError)
		}
	}
	bd := parts[0].Data
	absolutize(bd, base)
	for _, p := range parts[1:] {
		absolutize(p.Data, base)
		mergeOverlay(bd, p.Data)
	}
	for _, o := range overlays {
		osrc, err := charm.LocalBundleDataSource(o)
		if err != nil {
			return fmt.Errorf("cannot read overlay: %w", err)
		}
		for _, p := range osrc.Parts() {
			// Local charm paths in an overlay are relative to the overlay file, as in Juju.
			absolutize(p.Data, filepath.Dir(o))
			mergeOverlay(bd, p.Data)
		}
	}
	charms := map[string]charm.Charm{}
	archives := map[string][]byte{}
	for name, app := range bd.Applications {
		if app == nil {
			return fmt.Errorf("cannot deploy bundle: application %q has no spec", name)
		}
		p, err := m.resolveCharm(app.Charm, base)
		if err != nil {
			return err
		}
		ch, archive, err := readCharm(p)
		if err != nil {
			return err
		}
		charms[app.Charm], archives[app.Charm] = ch, archive
	}
	if err := bd.VerifyWithCharms(nil, nil, nil, charms); err != nil {
		return fmt.Errorf("cannot deploy bundle: %w", err)
	}
	appNames := slices.Sorted(maps.Keys(bd.Applications))
	m.mu.Lock()
	for _, name := range appNames {
		spec := bd.Applications[name]
		ch := charms[spec.Charm]
		settings, err := parseConfig(ch, spec.Options)
		if err != nil {
			m.mu.Unlock()
			return fmt.Errorf("cannot deploy %q: %w", name, err)
		}
		if err := m.addApplicationLocked(name, spec.Charm, ch, archives[spec.Charm], settings); err != nil {
			m.mu.Unlock()
			return err
		}
		m.apps[name].exposed = spec.Expose
		if len(spec.To) > 0 {
			m.logLocked("", "WARNING", fmt.Sprintf("application %q: placement %v ignored, every unit gets a new machine", name, spec.To))
		}
		for range spec.NumUnits {
			if _, err := m.addUnitLocked(name, nil); err != nil {
				m.mu.Unlock()
				return err
			}
		}
	}
	m.mu.Unlock()
	for _, rel := range bd.Relations {
		if len(rel) != 2 {
			return fmt.Errorf("cannot deploy bundle: bad relation %v", rel)
		}
		if _, err := m.Relate(rel[0], rel[1]); err != nil {
			return err
		}
	}
	return nil
}

// absolutize makes local charm paths absolute: verification resolves relative paths against
// the process cwd.
func absolutize(bd *charm.BundleData, base string) {
	if bd == nil {
		return
	}
	for _, app := range bd.Applications {
		if app != nil && strings.HasPrefix(app.Charm, ".") {
			app.Charm = filepath.Join(base, app.Charm)
		}
	}
}

// mergeOverlay applies an overlay document: applications are merged key by key (options
// merged, other fields replaced when set), relations appended.
func mergeOverlay(bd, o *charm.BundleData) {
	if o == nil {
		return
	}
	if bd.Applications == nil {
		bd.Applications = map[string]*charm.ApplicationSpec{}
	}
	for name, spec := range o.Applications {
		cur, ok := bd.Applications[name]
		if !ok || cur == nil {
			bd.Applications[name] = spec
			continue
		}
		if spec == nil {
			delete(bd.Applications, name)
			continue
		}
		if spec.Charm != "" {
			cur.Charm = spec.Charm
		}
		if spec.NumUnits != 0 {
			cur.NumUnits = spec.NumUnits
		}
		if spec.Expose {
			cur.Expose = true
		}
		if cur.Options == nil {
			cur.Options = map[string]any{}
		}
		maps.Copy(cur.Options, spec.Options)
	}
	bd.Relations = append(bd.Relations, o.Relations...)
}
