package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/tests/load"
)

// profileUnder starts a unit of the lpserver build (the server with net/http/pprof on a
// second port) behind haproxy, drives it with work for the profile's duration, and keeps
// a CPU profile taken meanwhile and a heap profile taken after, with their top functions
// for the report.
func (b *bench) profileUnder(ctx context.Context, name string, u load.Unit, work func(ctx context.Context, url string) error) {
	if err := b.tryProfile(ctx, name, u, work); err != nil {
		b.logf("Cannot profile %s: %v", name, err)
		b.profiles = append(b.profiles, fmt.Sprintf("### %s\n\nCannot profile: %v", name, err))
	}
}

func (b *bench) tryProfile(ctx context.Context, name string, u load.Unit, work func(ctx context.Context, url string) error) error {
	b.pprofUnits = true
	defer func() { b.pprofUnits = false }()
	b.logf("Profiling %s (%ds CPU profile under load)", name, b.size.profileSecs)
	un, err := b.startUnit(ctx, "prof-"+name, unit3Host, u)
	if err != nil {
		return err
	}
	defer b.stop(un.proc)
	px, err := b.startHAProxy(ctx, "haproxy-prof-"+name, []load.Frontend{{Name: name, Servers: []string{un.addr}}})
	if err != nil {
		return err
	}
	defer b.stop(px.proc)
	dir := filepath.Join(b.work, "profiles")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	secs := b.size.profileSecs
	wctx, cancel := context.WithTimeout(ctx, time.Duration(secs+2)*time.Second)
	defer cancel()
	workErr := make(chan error, 1)
	go func() { workErr <- work(wctx, px.urls[name]) }()
	cpuPath := filepath.Join(dir, name+".cpu.pprof")
	if err := fetch(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", un.pprof, secs), cpuPath); err != nil {
		return err
	}
	if err := <-workErr; err != nil && wctx.Err() == nil {
		return err
	}
	heapPath := filepath.Join(dir, name+".heap.pprof")
	if err := fetch(ctx, "http://"+un.pprof+"/debug/pprof/heap", heapPath); err != nil {
		return err
	}
	bin := filepath.Join(b.bin, "lpserver")
	rel := func(p string) string {
		if r, err := filepath.Rel(filepath.Dir(b.work), p); err == nil {
			return filepath.Join(filepath.Base(filepath.Dir(b.work)), r)
		}
		return p
	}
	text := fmt.Sprintf("### %s\n\nFiles: `%s`, `%s` (binary `%s`). Top of the CPU profile (`go tool pprof -top -cum`):\n\n```\n%s```\n\nTop of the in-use heap after the load:\n\n```\n%s```",
		name, rel(cpuPath), rel(heapPath), rel(bin),
		pprofTop(bin, cpuPath, "-cum", 30), pprofTop(bin, heapPath, "-sample_index=inuse_space", 12))
	b.profiles = append(b.profiles, text)
	return nil
}

// fetch saves the body of url to path.
func fetch(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// pprofTop returns the first lines of go tool pprof -top, or why there are none.
func pprofTop(bin, profile, flag string, n int) string {
	out, err := exec.Command("go", "tool", "pprof", "-top", flag, fmt.Sprintf("-nodecount=%d", n), bin, profile).Output()
	if err != nil {
		return fmt.Sprintf("(go tool pprof failed: %v)\n", err)
	}
	// Drop the header lines naming files and build ids.
	lines := strings.Split(string(out), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "Showing") || strings.HasPrefix(l, "      flat") {
			return strings.Join(lines[i:], "\n")
		}
	}
	return string(out)
}

// profileCheckIns profiles one unit under the closed-loop check-in load.
func (b *bench) profileCheckIns(ctx context.Context, c *catalog, machines []*machine) {
	u := load.Unit{DSN: c.dsn, URLTemplate: "http://" + haproxyHost + "/patches/{filename}"}
	b.profileUnder(ctx, "checkins", u, func(ctx context.Context, url string) error {
		hc := load.NewHTTPClient(b.size.maxConc)
		defer hc.CloseIdleConnections()
		_, err := load.Run(ctx, load.Plan{Mode: load.ClosedLoop, Concurrency: b.size.maxConc, Duration: time.Duration(b.size.profileSecs+1) * time.Second},
			checkInFunc(hc, url, machines))
		return err
	})
}

// profileDownloads profiles the postgres store under the download load.
func (b *bench) profileDownloads(ctx context.Context, c *catalog) {
	u := load.Unit{DSN: c.dsn, URLTemplate: "http://" + haproxyHost + "/patches/{filename}"}
	b.profileUnder(ctx, "downloads-pg", u, func(ctx context.Context, url string) error {
		hc := load.NewHTTPClient(b.size.dlConc)
		defer hc.CloseIdleConnections()
		_, err := load.Run(ctx, load.Plan{Mode: load.ClosedLoop, Concurrency: b.size.dlConc, Duration: time.Duration(b.size.profileSecs+1) * time.Second},
			func(ctx context.Context, i int) (int64, error) {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/patches/"+c.download.name, nil)
				if err != nil {
					return 0, err
				}
				return load.Send(hc, req, http.StatusOK)
			})
		return err
	})
}

// profileFleet profiles a unit while it serves the first page, patch health and the
// export over and over.
func (b *bench) profileFleet(ctx context.Context, u load.Unit) {
	b.profileUnder(ctx, "fleet", u, func(ctx context.Context, url string) error {
		admin, err := b.adminClient(ctx, url)
		if err != nil {
			return err
		}
		version := load.FleetKernels[0].PatchVersion
		for i := 0; i < 100_000 && ctx.Err() == nil; i++ {
			if _, _, err := admin.ReportMachines(ctx, server.MachineFilter{Tier: "stable", Limit: 1000}); err != nil {
				return err
			}
			if _, err := admin.PatchHealth(ctx, "stable", version); err != nil {
				return err
			}
		}
		return nil
	})
}
