package load

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is everything a benchmark run found, rendered as docs/benchmarks.md and as the
// table printed at the end of make bench.
type Report struct {
	Size     string
	Started  time.Time
	Took     time.Duration
	Machine  MachineInfo
	LoadEnd  string // load averages at the end of the run
	Versions [][2]string
	Commands []string
	Settings []string // what the stack ran with
	Notes    []string // caveats of this run
	Summary  []Row
	Sections []Section
}

// Row is one line of the summary table: a measured figure beside its ceiling.
type Row struct {
	ID          string // "1a", "2c", ... stable, so later rows (the hooks) slot in
	Measurement string
	Result      string
	Ceiling     string // the reference measured in the same run, "-" when the target is absolute
	Ratio       string
	Target      string
	Met         string // "yes", "no", "pending", "-"
}

// Section is a titled detail table, with text before it.
type Section struct {
	Title  string
	Text   string
	Header []string
	Rows   [][]string
}

// Verdict renders a target check.
func Verdict(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// Ratio renders a/b, or "-" when b is zero.
func Ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// Millis renders a duration in milliseconds with a precision that suits it.
func Millis(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms < 10:
		return fmt.Sprintf("%.2f ms", ms)
	case ms < 100:
		return fmt.Sprintf("%.1f ms", ms)
	}
	return fmt.Sprintf("%.0f ms", ms)
}

// Count renders n with thousands separators: 1,000,000.
func Count(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + Count(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// MiB renders a byte count in MiB.
func MiB(n float64) string { return fmt.Sprintf("%.1f MiB", n/(1<<20)) }

// HooksNotRun returns the summary rows of the charm hook measurements when the hooks
// phase did not run, saying why.
func HooksNotRun(why string) []Row {
	return []Row{
		{ID: "4a", Measurement: "charm hooks: dispatch wall time per hook (emulator)", Result: why, Ceiling: "-", Ratio: "-", Target: "< 50 ms per hook (median)", Met: "-"},
		{ID: "4b", Measurement: "charm hooks: `deploy` of the bundle to all units Active", Result: why, Ceiling: "-", Ratio: "-", Target: "< 60 s", Met: "-"},
	}
}

// WriteMarkdown writes the report as docs/benchmarks.md.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# Benchmarks\n\n")
	p("What the whole stack does on one machine, every component on loopback: the load generator\n")
	p("(tests/load) -> haproxy -> livepatch-server unit(s) -> PostgreSQL. Each figure stands beside\n")
	p("its ceiling measured in the same run: a handler that does no work behind the same haproxy for\n")
	p("check-ins, nginx serving the same file from disk behind the same haproxy for downloads.\n")
	p("Written by `make bench` (tests/load/cmd/lpbench); re-run it to refresh this page.\n\n")
	p("Run: size **%s**, started %s, took %s.\n\n", r.Size, r.Started.UTC().Format(time.RFC3339), r.Took.Round(time.Second))
	if len(r.Notes) > 0 {
		for _, n := range r.Notes {
			p("> %s\n", n)
		}
		p("\n")
	}
	p("## Summary\n\n")
	p("| # | measurement | result | ceiling | ratio | target | met |\n|---|---|---|---|---|---|---|\n")
	for _, row := range r.Summary {
		p("| %s | %s | %s | %s | %s | %s | %s |\n", row.ID, row.Measurement, row.Result, row.Ceiling, row.Ratio, row.Target, row.Met)
	}
	p("\n## Machine\n\n")
	p("| | |\n|---|---|\n")
	p("| CPUs (nproc) | %d |\n| CPU model | %s |\n| memory | %s |\n| kernel | %s |\n", r.Machine.CPUs, r.Machine.CPUModel, r.Machine.MemTotal, r.Machine.Kernel)
	p("| load average at start (1 5 15 min) | %s |\n| load average at end | %s |\n", r.Machine.LoadAvg, r.LoadEnd)
	p("\n## Versions\n\n| | |\n|---|---|\n")
	for _, v := range r.Versions {
		p("| %s | %s |\n", v[0], v[1])
	}
	p("\n## Commands\n\n```sh\n%s\n```\n", strings.Join(r.Commands, "\n"))
	if len(r.Settings) > 0 {
		p("\n## Settings\n\n")
		for _, s := range r.Settings {
			p("- %s\n", s)
		}
	}
	for _, s := range r.Sections {
		p("\n## %s\n\n", s.Title)
		if s.Text != "" {
			p("%s\n\n", strings.TrimSpace(s.Text))
		}
		if len(s.Header) > 0 {
			p("| %s |\n|%s\n", strings.Join(s.Header, " | "), strings.Repeat("---|", len(s.Header)))
			for _, row := range s.Rows {
				p("| %s |\n", strings.Join(row, " | "))
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteTable prints the summary as an aligned text table.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tMEASUREMENT\tRESULT\tCEILING\tRATIO\tTARGET\tMET")
	plain := strings.NewReplacer("**", "", "`", "")
	for _, row := range r.Summary {
		fmt.Fprintln(tw, plain.Replace(strings.Join([]string{row.ID, row.Measurement, row.Result, row.Ceiling, row.Ratio, row.Target, row.Met}, "\t")))
	}
	return tw.Flush()
}
