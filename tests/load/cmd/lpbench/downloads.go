package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/livepatch-onprem/livepatch/server/config"
	"github.com/livepatch-onprem/livepatch/tests/load"
)

// downloadStack is one way of serving the patch file, behind its own haproxy frontend.
type downloadStack struct {
	name  string
	label string
	proc  *load.Process
	step  *step
}

// downloads measures downloads of the 2 MB patch through haproxy from nginx (the ceiling),
// the postgres and filesystem stores, and both again with the patch cache on.
func (b *bench) downloads(ctx context.Context, c *catalog) error {
	b.logf("Downloads: starting nginx, four units and haproxy")
	ng, err := b.startNginx(ctx, nginxHost, c.patchDir)
	if err != nil {
		return err
	}
	defer b.stop(ng.proc)
	stacks := []*downloadStack{{name: "nginx", label: "nginx, file on disk (ceiling)", proc: ng.proc}}
	fronts := []load.Frontend{{Name: "nginx", Servers: []string{ng.addr}}}
	for _, s := range []struct {
		name, label, host string
		u                 load.Unit
	}{
		{"pg", "postgres store", unit1Host, load.Unit{Storage: config.StoragePostgres}},
		{"fs", "filesystem store", unit2Host, load.Unit{Storage: config.StorageFilesystem, FilesystemPath: c.patchDir}},
		{"pg-cache", "postgres store, patch-cache on", unit3Host, load.Unit{Storage: config.StoragePostgres, PatchCache: true}},
		{"fs-cache", "filesystem store, patch-cache on", unit4Host, load.Unit{Storage: config.StorageFilesystem, FilesystemPath: c.patchDir, PatchCache: true}},
	} {
		s.u.DSN = c.dsn
		s.u.URLTemplate = "http://" + haproxyHost + "/patches/{filename}"
		un, err := b.startUnit(ctx, "dl-"+s.name, s.host, s.u)
		if err != nil {
			return err
		}
		defer b.stop(un.proc)
		stacks = append(stacks, &downloadStack{name: s.name, label: s.label, proc: un.proc})
		fronts = append(fronts, load.Frontend{Name: s.name, Servers: []string{un.addr}})
	}
	px, err := b.startHAProxy(ctx, "haproxy-downloads", fronts)
	if err != nil {
		return err
	}
	defer b.stop(px.proc)

	want := sha256.Sum256(c.download.data)
	hc := load.NewHTTPClient(b.size.dlConc)
	for _, s := range stacks {
		url := px.urls[s.name] + "/patches/" + c.download.name
		if err := checkDownload(ctx, hc, url, want); err != nil {
			return fmt.Errorf("%s: %w", s.label, err)
		}
		plan := load.Plan{Mode: load.ClosedLoop, Concurrency: b.size.dlConc, Warmup: time.Second, Duration: b.size.dlDur}
		st, err := b.measure(ctx, plan, []*load.Process{s.proc}, px.proc, func(ctx context.Context, i int) (int64, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return 0, err
			}
			n, err := load.Send(hc, req, http.StatusOK)
			if err == nil && n != int64(len(c.download.data)) {
				err = fmt.Errorf("short body: %d of %d bytes", n, len(c.download.data))
			}
			return n, err
		})
		if err != nil {
			return err
		}
		s.step = st
		r := st.res
		b.logf("Downloads %-9s %7.1f MB/s, %6.1f req/s, p50 %s, p99 %s, errors %d %s", s.name, r.BytesPerSecond()/1e6, r.Throughput(),
			load.Millis(r.Latency.Quantile(0.5)), load.Millis(r.Latency.Quantile(0.99)), r.ErrorCount(), r.ErrorSummary())
		hc.CloseIdleConnections()
		if err := pause(ctx, time.Second); err != nil {
			return err
		}
	}
	b.downloadReport(stacks, len(c.download.data))
	if b.profile {
		ceiling := stacks[0].step.res.BytesPerSecond()
		for _, s := range stacks[1:3] {
			if s.step.res.ErrorCount() > 0 || s.step.res.BytesPerSecond() < 0.8*ceiling {
				b.profileDownloads(ctx, c)
				break
			}
		}
	}
	return nil
}

// checkDownload fetches url once and compares the body with the uploaded file.
func checkDownload(ctx context.Context, hc *http.Client, url string, want [32]byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if [32]byte(h.Sum(nil)) != want {
		return fmt.Errorf("GET %s: the body is not the uploaded file", url)
	}
	return nil
}

func (b *bench) downloadReport(stacks []*downloadStack, size int) {
	ceiling := stacks[0].step.res
	ceilText := fmt.Sprintf("%.1f MB/s, %.0f req/s (nginx)", ceiling.BytesPerSecond()/1e6, ceiling.Throughput())
	for i, s := range stacks[1:] {
		r := s.step.res
		ratio := r.BytesPerSecond() / ceiling.BytesPerSecond()
		b.report.Summary = append(b.report.Summary, load.Row{
			ID:          []string{"2a", "2b", "2c", "2d"}[i],
			Measurement: fmt.Sprintf("patch downloads (%.1f MB file, %d at a time), %s", float64(size)/1e6, b.size.dlConc, s.label),
			Result:      fmt.Sprintf("%.1f MB/s, %.0f req/s, p99 %s%s", r.BytesPerSecond()/1e6, r.Throughput(), load.Millis(r.Latency.Quantile(0.99)), errorSuffix(r)),
			Ceiling:     ceilText,
			Ratio:       load.Ratio(r.BytesPerSecond(), ceiling.BytesPerSecond()),
			Target:      "≥ 0.8 of nginx",
			Met:         load.Verdict(ratio >= 0.8 && r.ErrorCount() == 0),
		})
	}
	sec := load.Section{
		Title: "2. Patch downloads",
		Text: fmt.Sprintf(`The same %d-byte patch archive (patchfile.Generate, a 2 MiB module), fetched whole by
%d workers back to back for %s through haproxy (one frontend per stack, each one server). Every
body is checked for length; one per stack is checked against the SHA-256 of the upload. Cores:
gen / px / srv / pg as above (srv is nginx for the ceiling).`, size, b.size.dlConc, b.size.dlDur),
		Header: []string{"stack", "MB/s", "req/s", "p50", "p99", "errors", "cores gen / px / srv / pg"},
	}
	for _, s := range stacks {
		r := s.step.res
		errs := "0"
		if n := r.ErrorCount(); n > 0 {
			errs = r.ErrorSummary()
		}
		sec.Rows = append(sec.Rows, []string{s.label, fmt.Sprintf("%.1f", r.BytesPerSecond()/1e6), fmt.Sprintf("%.0f", r.Throughput()),
			load.Millis(r.Latency.Quantile(0.5)), load.Millis(r.Latency.Quantile(0.99)), errs, s.step.cpu.String()})
	}
	b.report.Sections = append(b.report.Sections, sec)
}

func errorSuffix(r *load.Result) string {
	if n := r.ErrorCount(); n > 0 {
		return fmt.Sprintf(", %d errors (%s)", n, r.ErrorSummary())
	}
	return ""
}
