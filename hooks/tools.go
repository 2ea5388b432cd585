package hooks

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// tool runs a hook tool and returns its stdout.
func (c *Context) tool(ctx context.Context, name string, args ...string) ([]byte, error) {
	return c.toolStdin(ctx, nil, name, args...)
}

func (c *Context) toolStdin(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	out, err := c.Tools.Run(ctx, Command{Name: name, Args: args, Stdin: stdin})
	if err != nil {
		return nil, fmt.Errorf("cannot run hook tool %s: %w", name, err)
	}
	return out, nil
}

// toolJSON runs a hook tool with --format=json and decodes its output into v.
func (c *Context) toolJSON(ctx context.Context, v any, name string, args ...string) error {
	out, err := c.tool(ctx, name, append([]string{"--format=json"}, args...)...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("cannot decode output of hook tool %s: %w", name, err)
	}
	return nil
}

// ConfigGet decodes the charm's whole configuration (config-get --format=json) into v, a
// pointer to a struct with json tags named as in config.yaml.
func (c *Context) ConfigGet(ctx context.Context, v any) error {
	return c.toolJSON(ctx, v, "config-get")
}

// RelationIDs returns the ids ("db:3") of the relations established on endpoint.
func (c *Context) RelationIDs(ctx context.Context, endpoint string) ([]string, error) {
	var ids []string
	if err := c.toolJSON(ctx, &ids, "relation-ids", endpoint); err != nil {
		return nil, err
	}
	return ids, nil
}

// RelationList returns the remote units in scope of relation relID, sorted.
func (c *Context) RelationList(ctx context.Context, relID string) ([]string, error) {
	var units []string
	if err := c.toolJSON(ctx, &units, "relation-list", "-r", relID); err != nil {
		return nil, err
	}
	slices.Sort(units)
	return units, nil
}

// RelationApp returns the name of the remote application of relation relID.
func (c *Context) RelationApp(ctx context.Context, relID string) (string, error) {
	var app string
	if err := c.toolJSON(ctx, &app, "relation-list", "-r", relID, "--app"); err != nil {
		return "", err
	}
	return app, nil
}

// RelationGet returns the data bag of unit (this unit or a remote one) in relation relID.
func (c *Context) RelationGet(ctx context.Context, relID, unit string) (map[string]string, error) {
	var data map[string]string
	if err := c.toolJSON(ctx, &data, "relation-get", "-r", relID, "-", unit); err != nil {
		return nil, err
	}
	if data == nil {
		data = map[string]string{}
	}
	return data, nil
}

// RelationGetApp returns the application data bag of app (this application or the remote
// one) in relation relID.
func (c *Context) RelationGetApp(ctx context.Context, relID, app string) (map[string]string, error) {
	var data map[string]string
	if err := c.toolJSON(ctx, &data, "relation-get", "-r", relID, "--app", "-", app); err != nil {
		return nil, err
	}
	if data == nil {
		data = map[string]string{}
	}
	return data, nil
}

// RelationSet sets keys of this unit's data bag in relation relID; an empty value deletes the
// key. The data goes to relation-set on stdin, so values never appear in process arguments.
func (c *Context) RelationSet(ctx context.Context, relID string, data map[string]string) error {
	return c.relationSet(ctx, relID, false, data)
}

// RelationSetApp sets keys of this application's data bag in relation relID (leader only).
func (c *Context) RelationSetApp(ctx context.Context, relID string, data map[string]string) error {
	return c.relationSet(ctx, relID, true, data)
}

func (c *Context) relationSet(ctx context.Context, relID string, app bool, data map[string]string) error {
	if len(data) == 0 {
		return nil
	}
	stdin, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("cannot encode relation data: %w", err)
	}
	args := []string{"-r", relID}
	if app {
		args = append(args, "--app")
	}
	args = append(args, "--file", "-")
	_, err = c.toolStdin(ctx, stdin, "relation-set", args...)
	return err
}

// StatusSet sets this unit's workload status.
func (c *Context) StatusSet(ctx context.Context, s Status) error {
	_, err := c.tool(ctx, "status-set", "--", s.Name, s.Message)
	return err
}

// AppStatusSet sets the application's workload status (leader only).
func (c *Context) AppStatusSet(ctx context.Context, s Status) error {
	_, err := c.tool(ctx, "status-set", "--application", "--", s.Name, s.Message)
	return err
}

// ApplicationVersionSet sets the workload version shown by juju status.
func (c *Context) ApplicationVersionSet(ctx context.Context, version string) error {
	_, err := c.tool(ctx, "application-version-set", "--", version)
	return err
}

// ActionGet returns the parameters of the running action, with schema defaults inserted.
func (c *Context) ActionGet(ctx context.Context) (map[string]any, error) {
	var params map[string]any
	if err := c.toolJSON(ctx, &params, "action-get"); err != nil {
		return nil, err
	}
	if params == nil {
		params = map[string]any{}
	}
	return params, nil
}

// ActionSet records results of the running action. Keys must be lower-case with dashes.
func (c *Context) ActionSet(ctx context.Context, results map[string]string) error {
	if len(results) == 0 {
		return nil
	}
	var args []string
	for _, k := range slices.Sorted(maps.Keys(results)) {
		args = append(args, k+"="+results[k])
	}
	_, err := c.tool(ctx, "action-set", args...)
	return err
}

// ActionFail marks the running action as failed with message.
func (c *Context) ActionFail(ctx context.Context, message string) error {
	_, err := c.tool(ctx, "action-fail", "--", message)
	return err
}

// ActionLog reports progress of the running action.
func (c *Context) ActionLog(ctx context.Context, message string) error {
	_, err := c.tool(ctx, "action-log", "--", message)
	return err
}

// IsLeader reports whether this unit is the leader of its application.
func (c *Context) IsLeader(ctx context.Context) (bool, error) {
	var leader bool
	if err := c.toolJSON(ctx, &leader, "is-leader"); err != nil {
		return false, err
	}
	return leader, nil
}

// Log levels of juju-log.
const (
	LevelDebug   = "DEBUG"
	LevelInfo    = "INFO"
	LevelWarning = "WARNING"
	LevelError   = "ERROR"
)

// JujuLog writes message to the unit's log at level. Messages start with a capital letter and
// never contain secrets.
func (c *Context) JujuLog(ctx context.Context, level, message string) error {
	_, err := c.tool(ctx, "juju-log", "--log-level", level, "--", message)
	return err
}

// Logf logs a formatted INFO message; a failure to log is ignored.
func (c *Context) Logf(ctx context.Context, format string, args ...any) {
	_ = c.JujuLog(ctx, LevelInfo, fmt.Sprintf(format, args...))
}

// OpenPort opens port/protocol ("tcp" or "udp") on the unit.
func (c *Context) OpenPort(ctx context.Context, port int, protocol string) error {
	_, err := c.tool(ctx, "open-port", strconv.Itoa(port)+"/"+protocol)
	return err
}

// ClosePort closes port/protocol on the unit.
func (c *Context) ClosePort(ctx context.Context, port int, protocol string) error {
	_, err := c.tool(ctx, "close-port", strconv.Itoa(port)+"/"+protocol)
	return err
}

// OpenedPorts returns the ports the unit has open ("8080/tcp", "1000-2000/udp", "icmp"), as
// committed by the hooks that succeeded: not those this hook opened or closed.
func (c *Context) OpenedPorts(ctx context.Context) ([]string, error) {
	var ports []string
	if err := c.toolJSON(ctx, &ports, "opened-ports"); err != nil {
		return nil, err
	}
	return ports, nil
}

// SetPorts makes ports ("8080/tcp") the unit's open ports: it closes the other open ones and
// runs open-port for each of ports every time, since Juju ignores a port already open and
// discards the port changes of a hook that fails, so no earlier hook can be trusted to have
// left them open.
func (c *Context) SetPorts(ctx context.Context, ports ...string) error {
	opened, err := c.OpenedPorts(ctx)
	if err != nil {
		return err
	}
	for _, p := range opened {
		if !slices.Contains(ports, p) {
			if _, err := c.tool(ctx, "close-port", p); err != nil {
				return err
			}
		}
	}
	for _, p := range ports {
		if _, err := c.tool(ctx, "open-port", p); err != nil {
			return err
		}
	}
	return nil
}

// Network is the output of network-get for one binding.
type Network struct {
	BindAddresses    []BindAddress `json:"bind-addresses"`
	EgressSubnets    []string      `json:"egress-subnets"`
	IngressAddresses []string      `json:"ingress-addresses"`
}

// BindAddress is one interface of a binding.
type BindAddress struct {
	MACAddress    string          `json:"mac-address"`
	InterfaceName string          `json:"interface-name"`
	Addresses     []InterfaceAddr `json:"addresses"`
}

// InterfaceAddr is one address of an interface.
type InterfaceAddr struct {
	Hostname string `json:"hostname"`
	Value    string `json:"value"`
	CIDR     string `json:"cidr"`
}

// BindAddress returns the first address to bind to: the first bind address, else the first
// ingress address, else "".
func (n Network) BindAddress() string {
	for _, b := range n.BindAddresses {
		for _, a := range b.Addresses {
			if a.Value != "" {
				return a.Value
			}
		}
	}
	for _, a := range n.IngressAddresses {
		if a != "" {
			return a
		}
	}
	return ""
}

// NetworkGet returns the network configuration of binding (an endpoint name).
func (c *Context) NetworkGet(ctx context.Context, binding string) (Network, error) {
	var n Network
	if err := c.toolJSON(ctx, &n, "network-get", binding); err != nil {
		return Network{}, err
	}
	return n, nil
}

// UnitGet returns the unit's "private-address" or "public-address".
func (c *Context) UnitGet(ctx context.Context, key string) (string, error) {
	var v string
	if err := c.toolJSON(ctx, &v, "unit-get", key); err != nil {
		return "", err
	}
	return strings.TrimSpace(v), nil
}
