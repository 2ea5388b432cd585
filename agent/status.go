package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/livepatch-onprem/livepatch/server"
)

// Status formats.
const (
	FormatHumane = "humane"
	FormatJSON   = "json"
	FormatYAML   = "yaml"
)

// Formats lists the status formats.
var Formats = []string{FormatHumane, FormatJSON, FormatYAML}

// WriteStatus renders a state as the status command shows it at time now: humane lines
// as the real client prints them (verbose adds the server, machine facts and the fixes),
// or JSON and YAML documents modelled on the real client's, which always hold everything.
func WriteStatus(w io.Writer, st *State, format string, verbose bool, now time.Time) error {
	switch format {
	case FormatHumane:
		_, err := io.WriteString(w, humaneStatus(st, verbose, now))
		return err
	case FormatJSON:
		data, err := json.MarshalIndent(jsonStatus(st), "", "  ")
		if err != nil {
			return fmt.Errorf("cannot encode status: %w", err)
		}
		_, err = w.Write(append(data, '\n'))
		return err
	case FormatYAML:
		var buf bytes.Buffer
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(yamlStatus(st)); err != nil {
			return fmt.Errorf("cannot encode status: %w", err)
		}
		_, err := w.Write(buf.Bytes())
		return err
	}
	return fmt.Errorf("invalid format %q: want one of %s", format, strings.Join(Formats, ", "))
}

// State returns the state for status, ErrNotEnabled when the machine is not enabled. An
// applied module that the kernel no longer has enabled (after a reboot) shows as waiting.
func (a *Agent) State() (*State, error) {
	st, err := a.loadState()
	if err != nil {
		return nil, err
	}
	if !st.Enabled {
		return nil, ErrNotEnabled
	}
	if st.Applied != nil && !a.applier.Enabled(st.Applied.Module) {
		if st.Waiting == nil {
			st.Waiting = st.Applied
		}
		st.Applied = nil
		st.PatchState, st.Reason = server.StateUnapplied, ""
	}
	return st, nil
}

// Now returns the agent's clock reading.
func (a *Agent) Now() time.Time { return a.now() }

func humaneStatus(st *State, verbose bool, now time.Time) string {
	var b strings.Builder
	line := func(key, value string) {
		if value != "" {
			fmt.Fprintf(&b, "%s: %s\n", key, value)
		}
	}
	line("last check", ago(st.LastCheck, now))
	line("kernel", st.System.Kernel)
	line("server check-in", checkIn(st))
	if st.Offered != nil || st.Applied != nil {
		if series := kernelSeries(st.System.Kernel); series != "" {
			line("kernel state", "✓ kernel series "+series+" is covered by Livepatch")
		}
	}
	line("patch state", patchState(st))
	if st.Applied != nil {
		line("patch version", st.Applied.Version)
	}
	if st.Waiting != nil && st.PatchState == server.StateUnapplied {
		why := "applying at the next check"
		if st.Mode == ModeNoApply {
			why = "not applied in mode no-apply"
		}
		line("waiting patch", fmt.Sprintf("%s (downloaded and verified; %s)", st.Waiting.Version, why))
	}
	line("tier", st.Tier)
	line("machine id", st.MachineID)
	if !verbose {
		return b.String()
	}
	line("server", st.Server)
	line("mode", st.Mode)
	line("client version", Version)
	line("architecture", st.System.Architecture)
	line("cpu model", st.System.CPUModel)
	if !st.System.BootTime.IsZero() {
		line("boot time", st.System.BootTime.UTC().Format(time.RFC3339))
	}
	if st.System.Uptime > 0 {
		line("uptime", uptime(st.System.Uptime))
	}
	if p := shownPatch(st); p != nil && p.Signature != nil {
		line("patch signed by", "key "+p.Signature.KeyID)
	}
	fixes, title := patchFixes(st)
	if len(fixes) > 0 {
		fmt.Fprintf(&b, "%s:\n", title)
		for _, f := range fixes {
			fmt.Fprintf(&b, "  %s\n", fixLine(f))
		}
	}
	return b.String()
}

// shownPatch is the patch verbose status describes: the applied one, else the waiting one.
func shownPatch(st *State) *server.PatchOffer {
	if st.Applied != nil {
		return st.Applied
	}
	return st.Waiting
}

// patchFixes returns the fixes to show: the applied patch's, else the waiting one's.
func patchFixes(st *State) ([]server.Fix, string) {
	switch {
	case st.Applied != nil:
		return st.Applied.Fixes, "fixes"
	case st.Waiting != nil:
		return st.Waiting.Fixes, "fixes (not applied)"
	}
	return nil, ""
}

// fixLine renders a fix as the real client lists them: "* cve-2024-1086".
func fixLine(f server.Fix) string {
	s := "* " + f.Name
	if f.Description != "" {
		s += ": " + f.Description
	}
	if f.Bug != "" {
		s += " (" + f.Bug + ")"
	}
	return s
}

func checkIn(st *State) string {
	switch st.CheckState {
	case CheckDone:
		return "succeeded"
	case CheckFailed:
		return "failed: " + st.CheckError
	}
	return "not yet"
}

func patchState(st *State) string {
	version := ""
	if st.Offered != nil {
		version = st.Offered.Version + " "
	}
	switch st.PatchState {
	case server.StateApplied:
		return "✓ all applicable livepatch modules inserted"
	case server.StateUnapplied:
		return "⧗ livepatches are installed, but the module is not yet applied"
	case server.StateNothingToApply:
		return "✓ no livepatches needed for this kernel yet"
	case server.StateApplyFailed:
		return "✗ applying patch " + version + "failed: " + st.Reason
	case server.StateCheckFailed:
		return "✗ " + st.Reason
	case server.StateKernelUpgradeRequired:
		return "✗ patches are no longer available for this version of the kernel, please upgrade"
	case server.StateNeedsCheck, "":
		return "⧗ not checked yet"
	}
	return "? unknown"
}

// kernelSeries returns "5.15" of "5.15.0-107-generic".
func kernelSeries(release string) string {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 3 {
		return ""
	}
	return parts[0] + "." + parts[1]
}

// ago renders how long before now t was: "52 seconds ago", "1 hour ago".
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	if d < time.Second {
		return "just now"
	}
	unit := func(n int64, name string) string {
		if n == 1 {
			return fmt.Sprintf("1 %s ago", name)
		}
		return fmt.Sprintf("%d %ss ago", n, name)
	}
	switch {
	case d < time.Minute:
		return unit(int64(d/time.Second), "second")
	case d < time.Hour:
		return unit(int64(d/time.Minute), "minute")
	case d < 48*time.Hour:
		return unit(int64(d/time.Hour), "hour")
	}
	return unit(int64(d/(24*time.Hour)), "day")
}

func uptime(secs int64) string { return (time.Duration(secs) * time.Second).String() }

func timestamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// checkStateOf returns the real client's CheckState of a state.
func checkStateOf(st *State) string {
	if st.CheckState == "" {
		return CheckNeeded
	}
	return st.CheckState
}

// statusJSON is the JSON status, keys as the real client's (in its order: sorted).
type statusJSON struct {
	Architecture  string             `json:"Architecture"`
	BootTime      string             `json:"Boot-Time,omitempty"`
	CPUModel      string             `json:"CPU-Model,omitempty"`
	CheckError    string             `json:"Check-Error,omitempty"`
	ClientVersion string             `json:"Client-Version"`
	LastCheck     string             `json:"Last-Check,omitempty"`
	MachineID     string             `json:"Machine-Id"`
	Mode          string             `json:"Mode,omitempty"`
	Server        string             `json:"Server"`
	Status        []kernelStatusJSON `json:"Status"`
	Uptime        string             `json:"Uptime,omitempty"`
	Tier          string             `json:"tier"`
}

type kernelStatusJSON struct {
	Kernel    string        `json:"Kernel"`
	Livepatch livepatchJSON `json:"Livepatch"`
	Running   bool          `json:"Running"`
}

type livepatchJSON struct {
	CheckState     string    `json:"CheckState"`
	Fixes          []fixJSON `json:"Fixes"`
	Reason         string    `json:"Reason,omitempty"`
	State          string    `json:"State"`
	Version        string    `json:"Version"`
	WaitingVersion string    `json:"WaitingVersion,omitempty"`
}

type fixJSON struct {
	Bug         string `json:"Bug"`
	Description string `json:"Description"`
	Name        string `json:"Name"`
	Patched     bool   `json:"Patched"`
}

func jsonStatus(st *State) statusJSON {
	lp := livepatchJSON{CheckState: checkStateOf(st), State: st.reportedPatchState(), Reason: st.Reason, Fixes: []fixJSON{}}
	if st.Applied != nil {
		lp.Version = st.Applied.Version
	}
	if st.Waiting != nil && st.PatchState == server.StateUnapplied {
		lp.WaitingVersion = st.Waiting.Version
	}
	fixes, _ := patchFixes(st)
	for _, f := range fixes {
		lp.Fixes = append(lp.Fixes, fixJSON{Bug: f.Bug, Description: f.Description, Name: f.Name, Patched: st.Applied != nil})
	}
	s := statusJSON{
		Architecture:  st.System.Architecture,
		BootTime:      timestamp(st.System.BootTime),
		CPUModel:      st.System.CPUModel,
		CheckError:    st.CheckError,
		ClientVersion: Version,
		LastCheck:     timestamp(st.LastCheck),
		MachineID:     st.MachineID,
		Mode:          st.Mode,
		Server:        st.Server,
		Status:        []kernelStatusJSON{{Kernel: st.System.Kernel, Livepatch: lp, Running: true}},
		Tier:          st.Tier,
	}
	if st.System.Uptime > 0 {
		s.Uptime = uptime(st.System.Uptime)
	}
	return s
}

// statusYAML is the YAML status, keys as the real client's YAML status.
type statusYAML struct {
	ClientVersion string             `yaml:"client-version"`
	MachineID     string             `yaml:"machine-id"`
	Architecture  string             `yaml:"architecture"`
	CPUModel      string             `yaml:"cpu-model,omitempty"`
	LastCheck     time.Time          `yaml:"last-check,omitempty"`
	BootTime      time.Time          `yaml:"boot-time,omitempty"`
	Uptime        string             `yaml:"uptime,omitempty"`
	Server        string             `yaml:"server"`
	ServerCheckIn string             `yaml:"server-check-in"`
	Mode          string             `yaml:"mode,omitempty"`
	Status        []kernelStatusYAML `yaml:"status"`
	Tier          string             `yaml:"tier"`
}

type kernelStatusYAML struct {
	Kernel    string        `yaml:"kernel"`
	Running   bool          `yaml:"running"`
	Livepatch livepatchYAML `yaml:"livepatch"`
}

type livepatchYAML struct {
	CheckState     string `yaml:"checkState"`
	PatchState     string `yaml:"patchState"`
	Version        string `yaml:"version"`
	WaitingVersion string `yaml:"waitingVersion,omitempty"`
	Reason         string `yaml:"reason,omitempty"`
	Fixes          string `yaml:"fixes"`
}

func yamlStatus(st *State) statusYAML {
	j := jsonStatus(st)
	lp := j.Status[0].Livepatch
	var fixes []string
	for _, f := range lp.Fixes {
		fixes = append(fixes, "* "+f.Name)
	}
	return statusYAML{
		ClientVersion: j.ClientVersion,
		MachineID:     j.MachineID,
		Architecture:  j.Architecture,
		CPUModel:      j.CPUModel,
		LastCheck:     st.LastCheck.UTC(),
		BootTime:      st.System.BootTime.UTC(),
		Uptime:        j.Uptime,
		Server:        j.Server,
		ServerCheckIn: checkIn(st),
		Mode:          j.Mode,
		Status: []kernelStatusYAML{{
			Kernel:  j.Status[0].Kernel,
			Running: true,
			Livepatch: livepatchYAML{
				CheckState:     lp.CheckState,
				PatchState:     lp.State,
				Version:        lp.Version,
				WaitingVersion: lp.WaitingVersion,
				Reason:         lp.Reason,
				Fixes:          strings.Join(fixes, "\n"),
			},
		}},
		Tier: j.Tier,
	}
}
