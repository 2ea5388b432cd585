package hooks

import "strings"

// The model's proxy settings, which Juju exports to every hook from the model configuration
// (juju-http-proxy, juju-https-proxy, juju-no-proxy), empty when they are not set.
const (
	EnvHTTPProxy  = "JUJU_CHARM_HTTP_PROXY"
	EnvHTTPSProxy = "JUJU_CHARM_HTTPS_PROXY"
	EnvNoProxy    = "JUJU_CHARM_NO_PROXY"
)

// ProxyEnv returns the environment variables that make the programs a hook runs (apt-get,
// add-apt-repository, pro) use the model's proxies: http_proxy, https_proxy and no_proxy,
// with their upper-case forms, for each model setting that is not empty. Pass it as
// Command.Env.
func (c *Context) ProxyEnv() []string {
	var env []string
	for _, v := range []struct{ from, to string }{
		{EnvHTTPProxy, "http_proxy"},
		{EnvHTTPSProxy, "https_proxy"},
		{EnvNoProxy, "no_proxy"},
	} {
		if value := c.Getenv(v.from); value != "" {
			env = append(env, v.to+"="+value, strings.ToUpper(v.to)+"="+value)
		}
	}
	return env
}
