package actions

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"runtime"
	"strings"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
)

// MachineTokenPath is where the Ubuntu Pro client keeps the machine token of the attachment.
const MachineTokenPath = "/var/lib/ubuntu-advantage/private/machine-token.json"

// onpremResource names the resource and the machine id the contracts server knows on-prem
// livepatch servers by.
const onpremResource = "livepatch-onprem"

// errNotAttached is returned when the unit has no Ubuntu Pro attachment to use.
var errNotAttached = errors.New("this unit is not attached to Ubuntu Pro: set the token of the ubuntu-advantage subordinate " +
	"(juju config ubuntu-advantage token=...) and wait for it to show Attached, or run get-resource-token contract-token=<token>")

// GetResourceToken obtains the livepatch-onprem resource token from the contracts server and
// shares it with every unit through the peer relation.
func GetResourceToken(ctx context.Context, c *hooks.Context, params map[string]any) (map[string]string, error) {
	if err := requireLeader(ctx, c, "get-resource-token"); err != nil {
		return nil, err
	}
	contractToken, err := stringParam(params, "contract-token")
	if err != nil {
		return nil, err
	}
	cfg, err := livepatch.LoadConfig(ctx, c)
	if err != nil {
		return nil, err
	}
	peer, err := livepatch.LoadPeer(ctx, c)
	if err != nil {
		return nil, err
	}
	if peer.RelID == "" {
		return nil, livepatch.ErrNoPeerRelation
	}
	contracts := contractsClient{http: c.HTTP, base: strings.TrimSuffix(cfg.ContractServerURL, "/")}

	var machineToken, source string
	if contractToken != "" {
		_ = c.ActionLog(ctx, "Exchanging the contract token for a machine token")
		machineToken, err = contracts.machineToken(ctx, contractToken, machineInfo(c))
		source = "the given contract token"
	} else {
		machineToken, err = attachedMachineToken(c)
		source = "this unit's Ubuntu Pro attachment"
	}
	if err != nil {
		return nil, err
	}
	_ = c.ActionLog(ctx, "Requesting the livepatch-onprem resource token")
	resourceToken, err := contracts.resourceToken(ctx, machineToken)
	if err != nil {
		return nil, err
	}
	if err := c.RelationSetApp(ctx, peer.RelID, map[string]string{livepatch.PeerResourceToken: resourceToken}); err != nil {
		return nil, err
	}
	results := map[string]string{
		"result": fmt.Sprintf("resource token obtained from %s with %s and shared with every unit; the servers start syncing patches",
			contracts.base, source),
	}
	if cfg.SyncToken != "" {
		results["note"] = "sync_token is set and takes precedence over the resource token: unset it to use the resource token"
	}
	return results, nil
}

// attachedMachineToken reads the machine token of the unit's Ubuntu Pro attachment.
func attachedMachineToken(c *hooks.Context) (string, error) {
	data, err := c.ReadFile(MachineTokenPath)
	if errors.Is(err, fs.ErrNotExist) {
		return "", errNotAttached
	}
	if err != nil {
		return "", fmt.Errorf("cannot read the Ubuntu Pro machine token: %w", err)
	}
	var doc struct {
		MachineToken string `json:"machineToken"`
	}
	if err := json.Unmarshal(data, &doc); err != nil || doc.MachineToken == "" {
		return "", errNotAttached
	}
	return doc.MachineToken, nil
}

// machineOS describes the machine to the contracts server.
type machineOS struct {
	Distribution string `json:"distribution"`
	Kernel       string `json:"kernel"`
	Release      string `json:"release"`
	Series       string `json:"series"`
	Type         string `json:"type"`
}

type machineRequest struct {
	Architecture string    `json:"architecture"`
	HostType     string    `json:"hostType"`
	MachineID    string    `json:"machineId"`
	OS           machineOS `json:"os"`
}

// machineInfo reads the machine description from /etc/os-release and the kernel release.
func machineInfo(c *hooks.Context) machineRequest {
	req := machineRequest{
		Architecture: runtime.GOARCH,
		HostType:     "container",
		MachineID:    onpremResource,
		OS:           machineOS{Distribution: "Ubuntu", Type: "Linux"},
	}
	if data, err := c.ReadFile("/etc/os-release"); err == nil {
		s := bufio.NewScanner(bytes.NewReader(data))
		for s.Scan() {
			k, v, ok := strings.Cut(s.Text(), "=")
			if !ok {
				continue
			}
			v = strings.Trim(v, `"'`)
			switch k {
			case "NAME":
				req.OS.Distribution = strings.TrimSpace(v)
			case "VERSION_ID":
				req.OS.Release = v
			case "VERSION_CODENAME":
				req.OS.Series = v
			}
		}
	}
	if data, err := c.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		req.OS.Kernel = strings.TrimSpace(string(data))
	}
	return req
}

// contractsClient talks to the Ubuntu Pro contracts server (livepatch-anchor.md section 5.7).
type contractsClient struct {
	http *http.Client
	base string
}

// machineToken exchanges a contract token for a machine token:
// POST /v1/context/machines/token with the contract token as bearer.
func (cc contractsClient) machineToken(ctx context.Context, contractToken string, machine machineRequest) (string, error) {
	body, err := json.Marshal(machine)
	if err != nil {
		return "", fmt.Errorf("cannot encode the machine description: %w", err)
	}
	var resp struct {
		MachineToken string `json:"machineToken"`
	}
	if err := cc.do(ctx, http.MethodPost, "/v1/context/machines/token", contractToken, body, &resp); err != nil {
		return "", err
	}
	if resp.MachineToken == "" {
		return "", fmt.Errorf("the contracts server at %s returned no machine token", cc.base)
	}
	return resp.MachineToken, nil
}

// resourceToken asks for the livepatch-onprem resource token:
// GET /v1/resources/livepatch-onprem/context/machines/livepatch-onprem with the machine token.
func (cc contractsClient) resourceToken(ctx context.Context, machineToken string) (string, error) {
	var resp struct {
		ResourceToken string `json:"resourceToken"`
	}
	path := "/v1/resources/" + onpremResource + "/context/machines/" + onpremResource
	if err := cc.do(ctx, http.MethodGet, path, machineToken, nil, &resp); err != nil {
		return "", err
	}
	if resp.ResourceToken == "" {
		return "", fmt.Errorf("the contracts server at %s returned no resource token", cc.base)
	}
	return resp.ResourceToken, nil
}

// do sends one request and decodes the JSON answer. Errors say what happened without echoing
// the token or the server's body (which may quote it).
func (cc contractsClient) do(ctx context.Context, method, path, bearer string, body []byte, out any) error {
	u, err := url.Parse(cc.base + path)
	if err != nil || u.Host == "" {
		return fmt.Errorf("contract_server_url %q is not a URL", cc.base)
	}
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), r)
	if err != nil {
		return fmt.Errorf("cannot build a request to the contracts server: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	client := cc.http
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the contracts server at %s (check contract_server_url and the model's proxy settings): %v",
			cc.base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("cannot read the answer of the contracts server at %s: %w", cc.base, err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("the contracts server at %s refused the token (HTTP %d): check that it is a valid Ubuntu Pro token entitled to Livepatch on-prem",
			cc.base, resp.StatusCode)
	case resp.StatusCode == http.StatusNotFound && strings.HasPrefix(path, "/v1/resources/"):
		return fmt.Errorf("the contracts server at %s has no livepatch-onprem resource for this subscription (HTTP 404)", cc.base)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("the contracts server at %s answered HTTP %d", cc.base, resp.StatusCode)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("cannot decode the answer of the contracts server at %s: %w", cc.base, err)
	}
	return nil
}

// unwrapURLError drops the request URL an *url.Error repeats, keeping the cause.
func unwrapURLError(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err
	}
	return err
}
