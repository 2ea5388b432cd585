package hooks

import "strings"

// The model's proxy settings, which Juju exports to every hook from the model configuration
// (juju-http-proxy, juju-https-proxy, juju-no-proxy), empty when they are not set.
const (
	EnvHTTPProxy  = "JUJU_CHARM_HTTP_PROXY"
	EnvHTTPSProxy = "JUJU_CHARM_HTTPS_PROXY"
	EnvNoProxy    = "JUJU_CHARM_NO_PROXY"
)

// Proxy holds proxy settings: the proxy URLs of http and https requests and the hosts reached
// directly (no_proxy).
type Proxy struct {
	HTTP, HTTPS, NoProxy string
}

// ModelProxy returns the model's proxy settings.
func (c *Context) ModelProxy() Proxy {
	return Proxy{HTTP: c.Getenv(EnvHTTPProxy), HTTPS: c.Getenv(EnvHTTPSProxy), NoProxy: c.Getenv(EnvNoProxy)}
}

// Env returns the environment variables that make the programs a hook runs (apt-get,
// add-apt-repository, pro) use the proxies: http_proxy, https_proxy and no_proxy, with their
// upper-case forms, for each setting that is not empty. Pass it as Command.Env.
func (p Proxy) Env() []string {
	var env []string
	for _, v := range []struct{ name, value string }{
		{"http_proxy", p.HTTP},
		{"https_proxy", p.HTTPS},
		{"no_proxy", p.NoProxy},
	} {
		if v.value != "" {
			env = append(env, v.name+"="+v.value, strings.ToUpper(v.name)+"="+v.value)
		}
	}
	return env
}
