package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/livepatch-onprem/livepatch/tests/e2e/deploy"
	"github.com/livepatch-onprem/livepatch/tests/jujusim"
)

// TestBadConfiguration makes each mistake of issue 5 on a working deployment: the unit
// goes Blocked with a message that names what to fix, no hook fails, the servers keep
// serving, and fixing the mistake brings everything back without any other step.
func TestBadConfiguration(t *testing.T) {
	t.Parallel()
	d := deploy.Deploy(t, deploy.Options{NoUpstream: true})
	good := d.Model.Status()
	goodUsers := configValue(t, d, "livepatch", "auth_basic_users")

	for _, tt := range []struct {
		name string
		// unit whose status shows the mistake
		unit string
		// break makes the mistake; fix undoes it
		break_, fix func(t *testing.T)
		// the message must contain every one of these
		want []string
		// nor contain any of these (secrets)
		not []string
	}{{
		name: "url_template without {filename}",
		unit: "livepatch/0",
		break_: func(t *testing.T) {
			d.Config(t, "livepatch", map[string]string{"url_template": d.URL + "/v1/patches/"})
		},
		fix:  func(t *testing.T) { d.Config(t, "livepatch", map[string]string{"url_template": d.URLTemplate()}) },
		want: []string{"url_template", "{filename}"},
	}, {
		name: "malformed auth_basic_users entry",
		unit: "livepatch/0",
		break_: func(t *testing.T) {
			// The second entry lost its colon; the first is fine and its hash must not show.
			d.Config(t, "livepatch", map[string]string{"auth_basic_users": goodUsers + ",ops$2y$10$abcdefghijklmnopqrstuv"})
		},
		fix:  func(t *testing.T) { d.Config(t, "livepatch", map[string]string{"auth_basic_users": goodUsers}) },
		want: []string{"auth_basic_users"},
		not:  []string{goodUsers[strings.Index(goodUsers, ":")+1:]},
	}, {
		name: "both database relations",
		unit: "livepatch/0",
		break_: func(t *testing.T) {
			if _, err := d.Model.Relate("livepatch:db", "postgresql:db"); err != nil {
				t.Fatal(err)
			}
		},
		fix: func(t *testing.T) {
			if err := d.Model.RemoveRelation("livepatch:db", "postgresql:db"); err != nil {
				t.Fatal(err)
			}
		},
		want: []string{"db", "database", "remove"},
	}, {
		name: "wrong ubuntu-advantage token",
		unit: "ubuntu-advantage/0",
		break_: func(t *testing.T) {
			d.Config(t, "ubuntu-advantage", map[string]string{"token": "not-a-contract-token"})
		},
		fix:  func(t *testing.T) { d.Config(t, "ubuntu-advantage", map[string]string{"token": deploy.ContractToken}) },
		want: []string{"token"},
		not:  []string{"not-a-contract-token"},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			tt.break_(t)
			d.WaitIdle(t, func(st *jujusim.Status) bool {
				u, ok := st.Unit(tt.unit)
				return ok && u.Workload.Current != "active"
			})
			st := d.Model.Status()
			u, _ := st.Unit(tt.unit)
			t.Logf("%s: %s %q", tt.unit, u.Workload.Current, u.Workload.Message)
			if u.Workload.Current != "blocked" {
				t.Errorf("%s: %s %q, want blocked", tt.unit, u.Workload.Current, u.Workload.Message)
			}
			for _, w := range tt.want {
				if !strings.Contains(u.Workload.Message, w) {
					t.Errorf("%s: message %q does not mention %q", tt.unit, u.Workload.Message, w)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(u.Workload.Message, n) {
					t.Errorf("%s: message %q shows %q", tt.unit, u.Workload.Message, n)
				}
			}
			noErrors(t, st)
			// A mistake in the configuration does not take the service down.
			if code, body := deploy.Get(t, d.URL+"/debug/info"); code != http.StatusOK {
				t.Errorf("with the mistake, GET %s/debug/info = %d %s", d.URL, code, body)
			}

			tt.fix(t)
			d.WaitIdle(t, func(st *jujusim.Status) bool { return sameWorkloads(st, good) })
			noErrors(t, d.Model.Status())
		})
	}
}

// sameWorkloads reports whether every unit of want has the same workload status in st.
func sameWorkloads(st, want *jujusim.Status) bool {
	for app := range want.Applications {
		for _, name := range want.UnitNames(app) {
			w, _ := want.Unit(name)
			u, ok := st.Unit(name)
			if !ok || u.Workload.Current != w.Workload.Current || u.Workload.Message != w.Workload.Message {
				return false
			}
		}
	}
	return true
}

// noErrors fails the test when a unit is in error: mistakes are Blocked statuses, never
// failed hooks.
func noErrors(t *testing.T, st *jujusim.Status) {
	t.Helper()
	for app := range st.Applications {
		for _, name := range st.UnitNames(app) {
			if u, _ := st.Unit(name); u.Workload.Current == "error" || u.Agent.Current == "error" {
				t.Errorf("%s in error: %q", name, u.Workload.Message)
			}
		}
	}
}

func configValue(t *testing.T, d *deploy.Deployment, app, key string) string {
	t.Helper()
	cfg, err := d.Model.Config(app)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := cfg[key].(string)
	return v
}
