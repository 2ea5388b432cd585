package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/internal/s3test"
	"github.com/livepatch-onprem/livepatch/server/config"
	"github.com/livepatch-onprem/livepatch/server/patchstore"
	"github.com/livepatch-onprem/livepatch/tests/load"
)

// downloadStack is one way of serving the patch file, behind its own haproxy frontend.
type downloadStack struct {
	name  string
	label string
	proc  *load.Process
	step  *step
}

// downloadUnit is a server unit serving the patch file from one store.
type downloadUnit struct {
	name, label, host string
	u                 load.Unit
}

// downloads measures downloads of the 2 MB patch through haproxy from nginx (the ceiling),
// the postgres and filesystem stores, both again with the patch cache on, and the s3 store
// (a SeaweedFS on loopback holding the same file) with the patch cache on and off.
func (b *bench) downloads(ctx context.Context, c *catalog) error {
	units := []downloadUnit{
		{"pg", "postgres store", unit1Host, load.Unit{Storage: config.StoragePostgres}},
		{"fs", "filesystem store", unit2Host, load.Unit{Storage: config.StorageFilesystem, FilesystemPath: c.patchDir}},
		{"pg-cache", "postgres store, patch-cache on", unit3Host, load.Unit{Storage: config.StoragePostgres, PatchCache: true}},
		{"fs-cache", "filesystem store, patch-cache on", unit4Host, load.Unit{Storage: config.StorageFilesystem, FilesystemPath: c.patchDir, PatchCache: true}},
	}
	weed, err := b.startS3(ctx, c)
	if err != nil {
		b.logf("Downloads: no s3 store: %v", err)
		b.report.Notes = append(b.report.Notes, "The s3 store's download rows (2e, 2f) were not measured: "+strings.ReplaceAll(err.Error(), "\n", " "))
	} else {
		defer weed.Stop()
		o := weed.Options(s3Bucket, "")
		units = append(units,
			downloadUnit{"s3-cache", "s3 store (SeaweedFS), patch-cache on", unit5Host, load.Unit{Storage: config.StorageS3, S3: o, PatchCache: true}},
			downloadUnit{"s3", "s3 store (SeaweedFS), patch-cache off", unit6Host, load.Unit{Storage: config.StorageS3, S3: o}},
		)
	}
	b.logf("Downloads: starting nginx, %d units and haproxy", len(units))
	ng, err := b.startNginx(ctx, nginxHost, c.patchDir)
	if err != nil {
		return err
	}
	defer b.stop(ng.proc)
	stacks := []*downloadStack{{name: "nginx", label: "nginx, file on disk (ceiling)", proc: ng.proc}}
	fronts := []load.Frontend{{Name: "nginx", Servers: []string{ng.addr}}}
	for _, s := range units {
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
		target, met := "≥ 0.8 of nginx", load.Verdict(ratio >= 0.8 && r.ErrorCount() == 0)
		if s.name == "s3" {
			// Without the cache every download is a GET of the bucket: the ratio is
			// measured and reported, with no target.
			target, met = "reported (no target)", "-"
		}
		b.report.Summary = append(b.report.Summary, load.Row{
			ID:          []string{"2a", "2b", "2c", "2d", "2e", "2f"}[i],
			Measurement: fmt.Sprintf("patch downloads (%.1f MB file, %d at a time), %s", float64(size)/1e6, b.size.dlConc, s.label),
			Result:      fmt.Sprintf("%.1f MB/s, %.0f req/s, p99 %s%s", r.BytesPerSecond()/1e6, r.Throughput(), load.Millis(r.Latency.Quantile(0.99)), errorSuffix(r)),
			Ceiling:     ceilText,
			Ratio:       load.Ratio(r.BytesPerSecond(), ceiling.BytesPerSecond()),
			Target:      target,
			Met:         met,
		})
	}
	sec := load.Section{
		Title: "2. Patch downloads",
		Text: fmt.Sprintf(`The same %d-byte patch archive (patchfile.Generate, a 2 MiB module), fetched whole by
%d workers back to back for %s through haproxy (one frontend per stack, each one server). Every
body is checked for length; one per stack is checked against the SHA-256 of the upload. Cores:
gen / px / srv / pg as above (srv is nginx for the ceiling; for the s3 store it leaves
out SeaweedFS, one weed server on 127.0.0.1 that every s3 download without the cache reads
through, and the cache fills from once).`, size, b.size.dlConc, b.size.dlDur),
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

// s3Bucket is the bucket of the s3 store's rows.
const s3Bucket = "lpbench"

// startS3 starts a SeaweedFS server (internal/s3test: the weed binary LIVEPATCH_TEST_WEED
// names, else the one ./.ci/weed prints, else weed on PATH) and puts the download patch in
// its bucket, through the s3 store itself, so the units find it where they look.
func (b *bench) startS3(ctx context.Context, c *catalog) (*s3test.Server, error) {
	if os.Getenv(s3test.EnvWeed) == "" {
		if _, err := os.Stat(".ci/weed"); err == nil {
			ctx, cancel := context.WithTimeout(ctx, 30*time.Minute) // a first build is long
			out, err := exec.CommandContext(ctx, ".ci/weed").Output()
			cancel()
			if err != nil {
				return nil, fmt.Errorf("cannot get weed from .ci/weed: %w", err)
			}
			os.Setenv(s3test.EnvWeed, strings.TrimSpace(string(out)))
		}
	}
	b.logf("Downloads: starting SeaweedFS")
	srv, err := s3test.Start(ctx)
	if err != nil {
		return nil, err
	}
	if err := srv.MakeBucket(ctx, s3Bucket); err != nil {
		srv.Stop()
		return nil, err
	}
	st, err := patchstore.NewS3(srv.Options(s3Bucket, ""))
	if err == nil {
		_, err = st.Put(ctx, c.download.name, bytes.NewReader(c.download.data))
	}
	if err != nil {
		srv.Stop()
		return nil, fmt.Errorf("cannot put %s in the bucket: %w", c.download.name, err)
	}
	return srv, nil
}
