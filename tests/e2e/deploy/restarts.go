package deploy

import (
	"strings"
	"time"
)

// Restarts returns the livepatch units in the order their charm restarted the server in a
// rolling restart since since, from the debug log.
func (d *Deployment) Restarts(since time.Time) []string {
	var out []string
	for _, l := range d.Model.Logs() {
		if l.Time.Before(since) || !strings.HasPrefix(l.Unit, "livepatch/") {
			continue
		}
		if strings.Contains(l.Message, "Restarted livepatch-server (rolling restart") {
			out = append(out, l.Unit)
		}
	}
	return out
}
