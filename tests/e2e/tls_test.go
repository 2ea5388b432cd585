package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/livepatch-onprem/livepatch/internal/testca"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/tests/e2e/deploy"
)

// TestTLS walks the deployment guide over https: haproxy terminates TLS with a
// certificate of the site's CA (ssl_cert, ssl_key and a service on port 443 with crts
// [DEFAULT], as bundle/README.md says), url_template is https, livepatch-admin trusts
// the CA through LIVEPATCH_CA_CRT, and a machine trusting it (ca-certs) enrols and
// downloads a patch; without the CA, the admin CLI and the client are refused.
func TestTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("deploys the bundle")
	}
	t.Parallel()
	d := deploy.New(t, deploy.Options{})

	// The site's CA signs a certificate for haproxy's address.
	ca, err := testca.New("site CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Sign(d.HAProxyAddress)
	if err != nil {
		t.Fatal(err)
	}
	// $ juju config haproxy ssl_cert="$(base64 -w0 cert.pem)" ssl_key="$(base64 -w0 key.pem)"
	// $ juju config haproxy services="$(cat services.yaml)"   # port 443, crts: [DEFAULT]
	d.Config(t, "haproxy", map[string]string{
		"ssl_cert": base64.StdEncoding.EncodeToString(cert),
		"ssl_key":  base64.StdEncoding.EncodeToString(key),
		"services": httpsServices(t, d),
	})
	d.WaitIdle(t, nil)
	d.URL, d.CACert = "https://"+d.HAProxyAddress, ca.Cert

	// The guide, over https: url_template https://<haproxy>/v1/patches/{filename}, the
	// admin users, the token, the resource token; the patches sync.
	d.Configure(t)
	cfg, err := d.Model.Config("livepatch")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg["url_template"]; got != "https://"+d.HAProxyAddress+"/v1/patches/{filename}" {
		t.Errorf("url_template = %v, want https", got)
	}

	// $ export LIVEPATCH_URL=https://<haproxy> LIVEPATCH_CA_CRT=/path/to/site-ca.pem
	caPath := filepath.Join(t.TempDir(), "site-ca.pem")
	if err := os.WriteFile(caPath, ca.Cert, 0o644); err != nil {
		t.Fatal(err)
	}
	adminDir := t.TempDir()
	admin := func(ca string, args ...string) (stdout, stderr string, err error) {
		ctx, cancel := context.WithTimeout(t.Context(), deploy.Timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, d.Bin.Admin, args...)
		cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
			return strings.HasPrefix(kv, "LIVEPATCH_")
		}), "LIVEPATCH_URL="+d.URL, "LIVEPATCH_ADMIN_CONFIG_DIR="+adminDir, "LIVEPATCH_CA_CRT="+ca)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err = cmd.Run()
		return out.String(), errb.String(), err
	}
	out, errOut, err := admin(caPath, "login", "-a", d.AdminUser+":"+d.AdminPassword)
	if err != nil || !strings.HasPrefix(out, "Logged in as "+d.AdminUser) {
		t.Fatalf("livepatch-admin login over https: %v\n%s%s", err, out, errOut)
	}
	if out, errOut, err := admin(caPath, "patch", "promote", deploy.DemoPatch, "stable"); err != nil {
		t.Fatalf("livepatch-admin patch promote: %v\n%s%s", err, out, errOut)
	}
	out, errOut, err = admin(caPath, "auth-token", "web-servers", "stable")
	authToken := strings.TrimSpace(out)
	if err != nil || authToken == "" {
		t.Fatalf("livepatch-admin auth-token: %v\n%s%s", err, out, errOut)
	}
	// Without the CA, the admin CLI refuses the server's certificate.
	_, errOut, err = admin("", "tier", "list")
	if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ExitCode() != 1 || !strings.Contains(errOut, "tls: failed to verify certificate: x509: certificate signed by unknown authority") {
		t.Errorf("livepatch-admin without the CA: %v, stderr %q; want exit 1 and the certificate error", err, errOut)
	}

	// $ sudo livepatch-client config remote-server=https://<haproxy> ca-certs=@stdin < site-ca.pem
	// $ sudo livepatch-client enable <token>
	m := d.Enrol(t, deploy.MachineConfig{Tier: "stable", Token: authToken, TrustedKey: d.Upstream.PublicKey})
	ms := m.Status(t)
	state, version := ms.PatchState()
	if ms.Server != d.URL || ms.CheckError != "" || state != server.StateUnapplied || version != deploy.DemoPatch {
		t.Errorf("machine status: server %s, check error %q, patch %s %s; want %s, no error, %s %s",
			ms.Server, ms.CheckError, state, version, d.URL, server.StateUnapplied, deploy.DemoPatch)
	}
	if files := m.PatchFiles(t); len(files) != 1 {
		t.Errorf("machine keeps patch files %v, want the one it downloaded over https", files)
	}

	// A machine that does not trust the CA is refused, and says why.
	stateDir := t.TempDir()
	client := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), deploy.Timeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, d.Bin.Client, append([]string{"--state-dir", stateDir}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := client("config", "remote-server="+d.URL, "mode=no-apply", "machine-id=e2enoca0000000000000000000000000", "kernel="+deploy.DemoKernel); err != nil {
		t.Fatalf("livepatch-client config: %v\n%s", err, out)
	}
	out, err = client("enable", authToken)
	if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ExitCode() != 1 || !strings.Contains(out, "tls: failed to verify certificate: x509: certificate signed by unknown authority") {
		t.Errorf("livepatch-client without the CA: %v, output %q; want exit 1 and the certificate error", err, out)
	}
}

// httpsServices returns haproxy's services option with the bundle's livepatch service
// moved to port 443 with TLS on its frontend (crts: [DEFAULT]: the ssl_cert and ssl_key
// options' certificate).
func httpsServices(t *testing.T, d *deploy.Deployment) string {
	t.Helper()
	cfg, err := d.Model.Config("haproxy")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := cfg["services"].(string)
	var services []map[string]any
	if err := yaml.Unmarshal([]byte(raw), &services); err != nil || len(services) != 1 {
		t.Fatalf("the bundle's haproxy services: %v, %d services, want one", err, len(services))
	}
	services[0]["service_port"] = 443
	services[0]["crts"] = []string{"DEFAULT"}
	out, err := yaml.Marshal(services)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
