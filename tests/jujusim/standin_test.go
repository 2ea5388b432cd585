package jujusim_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	_ "github.com/lib/pq"

	"github.com/livepatch-onprem/livepatch/tests/jujusim"
	"github.com/livepatch-onprem/livepatch/tests/standin/contracts"
)

// webMain is a tiny backend service (run as simtest-web by the web test charm): it serves
// /debug/info on $ADDR and reports whether it can query the database at $DSN.
func webMain(args []string) int {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/info", func(w http.ResponseWriter, r *http.Request) {
		status := "no database"
		if dsn := os.Getenv("DSN"); dsn != "" {
			db, err := sql.Open("postgres", dsn)
			if err == nil {
				var one int
				err = db.QueryRow("SELECT 1").Scan(&one)
				db.Close()
			}
			status = "ok"
			if err != nil {
				status = err.Error()
			}
		}
		fmt.Fprintf(w, `{"version": "test", "db": %q, "unit": %q}`, status, os.Getenv("UNIT"))
	})
	lis, err := net.Listen("tcp", os.Getenv("ADDR"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return map[bool]int{true: 1}[http.Serve(lis, mux) != nil]
}

func init() { jujusim.RegisterCommand("simtest-web", webMain) }

const webMeta = `
name: web
summary: test web backend
description: test web backend
provides:
  website: {interface: http}
requires:
  db: {interface: pgsql}
`

// webScripts make the web charm run simtest-web and follow the pgsql relation.
var webScripts = map[string]string{
	"install": `
mkdir -p "$JUJU_SIM_ROOT/usr/local/bin" "$JUJU_SIM_ROOT/etc/web"
ln -sf "$SIMTEST_BIN" "$JUJU_SIM_ROOT/usr/local/bin/simtest-web"
cat > "$JUJU_SIM_ROOT/etc/systemd/system/web.service" <<EOF
[Service]
ExecStart=/usr/local/bin/simtest-web
EnvironmentFile=-$JUJU_SIM_ROOT/etc/web/env
Environment=ADDR=$(unit-get private-address):8080 UNIT=$JUJU_UNIT_NAME
Restart=on-failure
EOF
systemctl daemon-reload
systemctl enable --now web
status-set active ready
`,
	"website-relation-joined": `relation-set port=8080`,
	// As the postgresql charm's db relation reads it: the application bag wins.
	"db-relation-joined": `
relation-set database=webdb
if [ "$(is-leader --format=json)" = true ]; then relation-set --app database=webdb; fi
`,
	"db-relation-changed": `
allowed="$(relation-get allowed-units)"
case " $allowed " in *" $JUJU_UNIT_NAME "*) ;; *) exit 0 ;; esac
echo "DSN=$(relation-get master) sslmode=disable" > "$JUJU_SIM_ROOT/etc/web/env"
systemctl restart web
`,
}

func TestStandinsHaproxyPostgresql(t *testing.T) {
	needPostgreSQL(t)
	m, sc := newModel(t)
	for hook, body := range webScripts {
		sc.set(t, hook, body)
	}
	deploy(t, m, jujusim.DeployArgs{Charm: "ch:postgresql"})
	deploy(t, m, jujusim.DeployArgs{Charm: "haproxy", Config: map[string]any{"services": `
- service_name: web
  service_host: "0.0.0.0"
  service_port: 80
  service_options: [balance leastconn, option httpchk GET /debug/info]
  server_options: maxconn 200 cookie S{i} check inter 200
`}})
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "web", webMeta, "", ""), NumUnits: 2})
	relate(t, m, "web:db", "postgresql:db")
	relID := relate(t, m, "web", "haproxy")
	waitIdle(t, m)

	st := m.Status()
	for _, u := range []string{"postgresql/0", "haproxy/0", "web/0", "web/1"} {
		us, _ := st.Unit(u)
		if us.Workload.Current != "active" {
			t.Errorf("%s: %+v / %+v", u, us.Workload, us.Agent)
		}
	}
	pgID, _ := m.RelationID("web:db", "postgresql:db")
	data, err := m.RelationData(pgID, "postgresql/0")
	if err != nil {
		t.Fatal(err)
	}
	if data["allowed-units"] != "web/0 web/1" || data["database"] != "webdb" || data["user"] != fmt.Sprintf("relation-%d", pgID) || data["state"] != "standalone" {
		t.Errorf("pgsql data = %v", data)
	}
	if rp, _ := m.RelationData(relID, "haproxy/0"); rp["public-address"] == "" {
		t.Errorf("haproxy did not publish public-address: %v", rp)
	}

	// Both backends answer through haproxy once its health checks pass.
	haddr, _ := m.UnitAddress("haproxy/0")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	seen := map[string]bool{}
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for len(seen) < 2 {
		select {
		case <-ctx.Done():
			t.Fatalf("backends seen through haproxy: %v", seen)
		case <-tick.C:
		}
		resp, err := client.Get("http://" + haddr + "/debug/info")
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var info struct{ DB, Unit string }
		if resp.StatusCode == 200 && json.Unmarshal(body, &info) == nil && info.DB == "ok" {
			seen[info.Unit] = true
		}
	}

	// Removing a backend reloads haproxy without it.
	if err := m.RemoveUnit("web/1"); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	root, _ := m.UnitRoot("haproxy/0")
	cfg, _ := os.ReadFile(root + "/etc/haproxy/haproxy.cfg")
	if strings.Contains(string(cfg), "web-1-8080") || !strings.Contains(string(cfg), "server web-0-8080") {
		t.Errorf("haproxy.cfg after removal:\n%s", cfg)
	}
	if st, _ := m.ServiceState("haproxy/0", "haproxy"); st != "active" {
		t.Errorf("haproxy is %s", st)
	}
}

// TestPostgresqlBothEndpoints: related on db and database at once, the postgresql stand-in
// is Blocked, as the real charm is; removing one relation makes it Active again in that
// relation's -broken hook (where Juju still lists the relation: it must be left out).
func TestPostgresqlBothEndpoints(t *testing.T) {
	needPostgreSQL(t)
	m, _ := newModel(t)
	deploy(t, m, jujusim.DeployArgs{Charm: "ch:postgresql"})
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "legacy", `
name: legacy
summary: pgsql client
description: pgsql client
requires:
  db: {interface: pgsql}
`, "", "")})
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "modern", `
name: modern
summary: postgresql_client client
description: postgresql_client client
requires:
  database: {interface: postgresql_client}
`, "", "")})
	relate(t, m, "legacy:db", "postgresql:db")
	relate(t, m, "modern:database", "postgresql:database")
	waitIdle(t, m)
	if u, _ := m.Status().Unit("postgresql/0"); u.Workload.Current != "blocked" {
		t.Errorf("postgresql/0 with both endpoints: %+v", u.Workload)
	}
	if err := m.RemoveRelation("modern:database", "postgresql:database"); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	if u, _ := m.Status().Unit("postgresql/0"); u.Workload.Current != "active" {
		t.Errorf("postgresql/0 after removing one relation: %+v", u.Workload)
	}
}

func TestProAgainstContracts(t *testing.T) {
	cs := contracts.New("good-token")
	if err := cs.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	m, _ := newModel(t)
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "cli", cliMeta, cliConfig, "")})
	waitIdle(t, m)
	sh := func(script string) jujusim.ExecResult {
		t.Helper()
		res, err := m.Exec(t.Context(), "cli/0", "sh", "-c", script)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	setup := `mkdir -p "$JUJU_SIM_ROOT/etc/ubuntu-advantage" && echo "contract_url: ` + cs.URL + `" > "$JUJU_SIM_ROOT/etc/ubuntu-advantage/uaclient.conf"`
	if res := sh(setup + ` && echo "token: bad" > /tmp/$$.yaml && pro attach --attach-config /tmp/$$.yaml`); res.Code != 1 || !strings.Contains(res.Stderr, "Invalid token") {
		t.Errorf("attach with a bad token = %+v", res)
	}
	res := sh(`f=$(mktemp) && echo "token: good-token" > $f && pro attach --attach-config $f --no-auto-enable && pro status --format json`)
	if res.Code != 0 {
		t.Fatalf("attach = %+v", res)
	}
	lines := strings.Split(strings.TrimSpace(res.Stdout), "\n")
	var st struct {
		Attached bool `json:"attached"`
		Services []struct{ Name, Status, Entitled string }
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &st); err != nil {
		t.Fatal(err)
	}
	if !st.Attached || len(st.Services) == 0 || st.Services[0].Entitled != "yes" || st.Services[0].Status != "disabled" {
		t.Errorf("status = %+v", st)
	}
	root, _ := m.UnitRoot("cli/0")
	b, err := os.ReadFile(root + "/var/lib/ubuntu-advantage/private/machine-token.json")
	if err != nil {
		t.Fatal(err)
	}
	var mt struct {
		MachineToken string `json:"machineToken"`
	}
	json.Unmarshal(b, &mt)
	resp, err := http.DefaultClient.Do(mustRequest(t, cs.URL+"/v1/resources/livepatch-onprem/context/machines/x", mt.MachineToken))
	if err != nil {
		t.Fatal(err)
	}
	var rt struct {
		ResourceToken string `json:"resourceToken"`
	}
	json.NewDecoder(resp.Body).Decode(&rt)
	resp.Body.Close()
	if !cs.ValidResourceToken("livepatch-onprem", rt.ResourceToken) {
		t.Errorf("resource token %q not valid", rt.ResourceToken)
	}
	resp, _ = http.DefaultClient.Do(mustRequest(t, cs.URL+"/v1/resources/livepatch-onprem/context/machines/x", "bad"))
	if resp.StatusCode != 401 {
		t.Errorf("bad machine token: %s", resp.Status)
	}
	resp.Body.Close()
	if res := sh(`pro attach good-token`); res.Code != 2 || !strings.Contains(res.Stderr, "already attached") {
		t.Errorf("second attach = %+v", res)
	}
	if res := sh(`pro detach --assume-yes && pro status --format json`); res.Code != 0 || !strings.Contains(res.Stdout, `"attached":false`) {
		t.Errorf("detach = %+v", res)
	}
}

func mustRequest(t *testing.T, url, token string) *http.Request {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	return req
}
