package reliability

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/tests/e2e/deploy"
)

// Markers of the measured table in docs/reliability.md.
const (
	tableBegin = "<!-- reliability:table:begin (make reliability rewrites what is between the markers) -->"
	tableEnd   = "<!-- reliability:table:end -->"
)

// writeReport rewrites the measured table between the markers of the file at path; an
// empty path writes nothing.
func writeReport(path string, v variant, drills []drill, total deploy.WitnessStats, acked, lost int) error {
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("cannot read the report: %w", err)
	}
	doc := string(data)
	i, j := strings.Index(doc, tableBegin), strings.Index(doc, tableEnd)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no measured table markers", path)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\nMeasured %s, variant %s: %d machines checking in through haproxy at %.0f check-ins/s in all, "+
		"a check-in retried at most %d times after a transport error or a 5xx. Load average at the end: %s "+
		"(a shared machine: other engineers' builds and tests ran meanwhile).\n\n",
		tableBegin, time.Now().UTC().Format("2006-01-02 15:04 UTC"), v.Name, v.Machines, v.Rate, v.Retries, machineLoad())
	b.WriteString("| Drill | Check-ins sent | Failed | Retried | Time to recover | What happened |\n|---|---:|---:|---:|---:|---|\n")
	for _, d := range drills {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %s | %s |\n", d.Name, d.Stats.Sent, d.Stats.Failed, d.Stats.Retried,
			round(d.Recover), strings.ReplaceAll(d.Detail, "|", "\\|"))
	}
	fmt.Fprintf(&b, "\nWhole run: %d check-ins sent, %d failed, %d retries; %d reports acknowledged, %d of them missing from the database at the end.\n\n%s",
		total.Sent, total.Failed, total.Retried, acked, lost, tableEnd)
	doc = doc[:i] + b.String() + doc[j+len(tableEnd):]
	return os.WriteFile(path, []byte(doc), 0o644)
}
