package load

import (
	"bytes"
	"fmt"
	"strings"
	"text/template"
	"time"

	"github.com/livepatch-onprem/livepatch/server/config"
	"github.com/livepatch-onprem/livepatch/server/patchstore"
)

// HAProxy is what the harness's haproxy config says: one frontend per measured stack,
// each balancing round robin over its backends.
type HAProxy struct {
	// MaxConn is the process-wide connection limit (global maxconn).
	MaxConn int
	// ServerMaxConn caps the connections haproxy opens to one backend server; requests
	// beyond it wait in haproxy's queue. It sits a little above the livepatch server's
	// concurrency-limit, so haproxy, not the server's 429, absorbs bursts.
	ServerMaxConn int
	Frontends     []Frontend
}

// Frontend is one listening address and the servers behind it.
type Frontend struct {
	Name    string   // [a-z0-9-]
	Bind    string   // host:port
	Servers []string // host:port
}

var haproxyTemplate = template.Must(template.New("haproxy").Parse(`# Rendered by tests/load (lpbench): the reverse proxy of the benchmark stack.
global
    maxconn {{.MaxConn}}

defaults
    mode http
    option http-keep-alive
    option forwardfor
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout queue 30s
    timeout http-keep-alive 60s
    timeout check 5s
    maxconn {{.MaxConn}}
{{range $f := .Frontends}}
frontend {{$f.Name}}
    bind {{$f.Bind}}
    default_backend {{$f.Name}}

backend {{$f.Name}}
    balance roundrobin
    option httpchk GET /debug/info
    http-check expect status 200
{{- range $i, $s := $f.Servers}}
    server {{$f.Name}}-{{$i}} {{$s}} check inter 2s maxconn {{$.ServerMaxConn}}
{{- end}}
{{end}}`))

// Render returns the haproxy configuration file.
func (h HAProxy) Render() ([]byte, error) {
	for _, f := range h.Frontends {
		if f.Name == "" || f.Bind == "" || len(f.Servers) == 0 {
			return nil, fmt.Errorf("cannot render haproxy config: frontend %q needs a name, an address and servers", f.Name)
		}
	}
	var buf bytes.Buffer
	if err := haproxyTemplate.Execute(&buf, h); err != nil {
		return nil, fmt.Errorf("cannot render haproxy config: %w", err)
	}
	return buf.Bytes(), nil
}

// Nginx is the configuration of the nginx that serves the reference download: the same
// patch file from disk, as fast as a static file server does it (sendfile).
type Nginx struct {
	Listen  string // host:port
	Root    string // directory holding the patch files, served under /patches/
	Dir     string // nginx's prefix: pid, logs and temporary files
	Workers int    // worker processes; 0: auto (one per core, Debian's default)
}

var nginxTemplate = template.Must(template.New("nginx").Parse(`# Rendered by tests/load (lpbench): the reference static file server.
worker_processes {{if .Workers}}{{.Workers}}{{else}}auto{{end}};
daemon off;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log warn;

events {
    worker_connections 1024;
}

http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    client_body_temp_path {{.Dir}}/client_body;
    proxy_temp_path {{.Dir}}/proxy;
    fastcgi_temp_path {{.Dir}}/fastcgi;
    uwsgi_temp_path {{.Dir}}/uwsgi;
    scgi_temp_path {{.Dir}}/scgi;
    types {
        application/x-bzip2 bz2;
    }
    default_type application/octet-stream;

    server {
        listen {{.Listen}};
        location /patches/ {
            alias {{.Root}}/;
            etag on;
        }
        location = /debug/info {
            default_type application/json;
            return 200 '{"version":"nginx"}';
        }
    }
}
`))

// Render returns the nginx configuration file.
func (n Nginx) Render() ([]byte, error) {
	if n.Listen == "" || n.Root == "" || n.Dir == "" {
		return nil, fmt.Errorf("cannot render nginx config: listen, root and dir are required")
	}
	var buf bytes.Buffer
	if err := nginxTemplate.Execute(&buf, n); err != nil {
		return nil, fmt.Errorf("cannot render nginx config: %w", err)
	}
	return buf.Bytes(), nil
}

// Unit is one livepatch-server process of the benchmark stack.
type Unit struct {
	Address     string // host:port it listens on
	URLTemplate string // as the charm renders it: the haproxy frontend
	DSN         string
	BasicUser   string // user:bcrypt-hash
	// Storage is postgres, filesystem (FilesystemPath then) or s3 (S3 then: endpoint,
	// bucket, prefix, keys, path style).
	Storage        string
	FilesystemPath string
	S3             patchstore.S3Options
	PatchCache     bool
	PoolMax        int // database.connection-pool-max; 0: the default
	RetentionDays  int // machine-reports.retention-days; 0: the default
	// StaleAfterDays is machine-reports.stale-after-days (0: off, the default).
	StaleAfterDays int
	// CleanupInterval is machine-reports.cleanup-interval; 0: the default.
	CleanupInterval time.Duration
}

// Config returns the unit's server config: the defaults (as the charm renders them for an
// operator who sets nothing) with the unit's address, database, admin and storage.
func (u Unit) Config() config.Config {
	c := config.Default()
	c.Server.Address = u.Address
	c.Server.URLTemplate = u.URLTemplate
	c.Database.ConnectionString = u.DSN
	c.Auth.BasicUsers = []string{u.BasicUser}
	if u.Storage != "" {
		c.PatchStorage.Type = u.Storage
	}
	c.PatchStorage.FilesystemPath = u.FilesystemPath
	if u.Storage == config.StorageS3 {
		s := &c.PatchStorage
		s.S3Endpoint, s.S3Region, s.S3Bucket, s.S3PathPrefix = u.S3.Endpoint, u.S3.Region, u.S3.Bucket, u.S3.Prefix
		s.S3AccessKey, s.S3SecretKey, s.S3PathStyle = u.S3.AccessKey, u.S3.SecretKey, u.S3.PathStyle
	}
	c.PatchCache.Enabled = u.PatchCache
	if u.PoolMax > 0 {
		c.Database.ConnectionPoolMax = u.PoolMax
	}
	if u.RetentionDays > 0 {
		c.MachineReports.RetentionDays = u.RetentionDays
	}
	c.MachineReports.StaleAfterDays = u.StaleAfterDays
	if u.CleanupInterval > 0 {
		c.MachineReports.CleanupInterval = config.Duration(u.CleanupInterval)
	}
	return c
}

// Render returns the unit's config file, validated as the server will load it.
func (u Unit) Render() ([]byte, error) {
	c := u.Config()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("cannot render server config: %w", err)
	}
	return c.Marshal()
}

// PostgresSettings are the postgresql.conf settings of the benchmark cluster.
type PostgresSettings struct {
	MaxConns      int
	SharedBuffers string // "2GB"
	// Fsync keeps durability on (fsync, synchronous_commit, full_page_writes): each
	// check-in's commit waits for its WAL to reach the disk, as in production.
	Fsync bool
}

// DefaultPostgresSettings suits this class of machine: 24 GiB of memory, 2 cores.
func DefaultPostgresSettings() PostgresSettings {
	return PostgresSettings{MaxConns: 200, SharedBuffers: "2GB", Fsync: true}
}

// Render returns the lines appended to postgresql.conf after the cluster's own (address,
// port, socket, MaxConns and Fsync: internal/pgtest's Options).
func (p PostgresSettings) Render() string {
	lines := []string{
		"# Rendered by tests/load (lpbench).",
		fmt.Sprintf("shared_buffers = %s", p.SharedBuffers),
		"effective_cache_size = 12GB",
		"work_mem = 16MB",
		"maintenance_work_mem = 512MB",
		"wal_buffers = 64MB",
		"max_wal_size = 8GB",
		"checkpoint_timeout = 15min",
		"checkpoint_completion_target = 0.9",
		"random_page_cost = 1.1",
		"max_worker_processes = 4",
		"max_parallel_workers = 2",
		"max_parallel_workers_per_gather = 1",
		"logging_collector = off",
		"log_min_messages = warning",
	}
	return strings.Join(lines, "\n") + "\n"
}

// ParseRates parses a comma-separated list of rates (requests per second), for flags.
func ParseRates(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(f, &v); err != nil || v <= 0 {
			return nil, fmt.Errorf("invalid rate %q: want a positive number", f)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no rates given")
	}
	return out, nil
}
