package main

import (
	"bytes"
	"context"
	"crypto/md5"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/tests/load"
)

// Soak settings: the jobs run with the shortest settings the server accepts, so that
// they work all through the soak.
const (
	soakRetentionDays = 1           // machine-reports.retention-days
	soakStaleDays     = 1           // machine-reports.stale-after-days
	soakCleanup       = time.Minute // machine-reports.cleanup-interval
	soakStaleRate     = 50          // seeded machines that turn stale per second
	soakStep          = time.Minute // one row of the soak table
	soakGrowthLimit   = 1.05        // end over middle: what "stopped growing" allows
)

// soakTables are the tables whose sizes the soak follows.
var soakTables = []string{"machines", "machine_reports", "machine_changes"}

// soakMachineID is the id of soak machine n (1-based), as the seed writes it.
func soakMachineID(n int) string {
	sum := md5.Sum([]byte(fmt.Sprintf("soak-%d", n)))
	return hex.EncodeToString(sum[:])
}

// soakToken is the machine token of soak machine n; the seed stores its hash.
func soakToken(n int) string { return fmt.Sprintf("soak-token-%d", n) }

// soakKernel is the kernel of soak machine n, as the seed writes it: the check-ins report
// what the database holds, so that they record no change of state.
func soakKernel(n int) load.FleetKernel { return load.FleetKernels[n%len(load.FleetKernels)] }

// soakSeedSQL returns the statements that fill the soak database: machines machines that
// check in (last seen within the hour, their status the one their check-ins report), and
// what the jobs will have to remove while the soak runs: stale machines crossing the
// stale-after-days cutoff at soakStaleRate per second and history crossing the
// retention cutoff at rate rows per second, from one cleanup interval before the start
// to the end, so that the retention deletes what the check-ins add.
func soakSeedSQL(machines int, rate float64, d time.Duration, boot time.Time) []string {
	values := make([]string, len(load.FleetKernels))
	for i, k := range load.FleetKernels {
		values[i] = fmt.Sprintf("(%d, %s, %s, %s)", i, sqlQuote(k.Release), sqlQuote(k.Architecture), sqlQuote(k.PatchVersion))
	}
	kernels := strings.Join(values, ", ")
	span := d + soakCleanup
	stale := int(soakStaleRate * span.Seconds())
	history := int(rate * span.Seconds())
	// The cutoffs move with the clock: rows seeded at cutoff+x cross it x after the start.
	retentionStart := fmt.Sprintf("now() - interval '%d days' - interval '%d seconds'", soakRetentionDays, int(soakCleanup.Seconds()))
	staleStart := fmt.Sprintf("now() - interval '%d days' - interval '%d seconds'", soakStaleDays, int(soakCleanup.Seconds()))
	bootAt := sqlQuote(boot.UTC().Format(time.RFC3339))
	return []string{
		`INSERT INTO auth_tokens (label, tier_id, token_hash)
			SELECT 'soak-' || name, id, sha256(('soak-' || name)::bytea) FROM tiers`,
		fmt.Sprintf(`INSERT INTO machines (id, tier_id, auth_token_id, machine_token_hash, enabled_at, first_seen,
				last_seen, state_since, kernel, architecture, cpu_model, boot_time, uptime, client_version,
				patch_state, patch_version, hostname)
			SELECT md5('soak-' || i), t.id, a.id, sha256(('soak-token-' || i)::bytea),
				now() - interval '30 days', now() - interval '30 days', now() - random() * interval '1 hour',
				now() - interval '30 days', k.release, k.arch, 'AMD EPYC 7B13', %[3]s::timestamptz, 864000, '10.8.3',
				'applied', k.version, 'soak-' || i
			FROM generate_series(1, %[1]d) i
			JOIN (VALUES %[2]s) AS k (idx, release, arch, version) ON k.idx = i %% %[4]d
			JOIN tiers t ON t.position = 1 + i %% 4
			JOIN auth_tokens a ON a.tier_id = t.id AND a.label = 'soak-' || t.name`,
			machines, kernels, bootAt, len(load.FleetKernels)),
		fmt.Sprintf(`INSERT INTO machines (id, tier_id, auth_token_id, machine_token_hash, enabled_at, first_seen,
				last_seen, state_since, kernel, architecture, patch_state, patch_version, hostname)
			SELECT md5('soak-stale-' || i), t.id, a.id, sha256(('soak-stale-' || i)::bytea),
				now() - interval '60 days', now() - interval '60 days',
				%[1]s + (i::float8 / %[2]d) * interval '%[3]d seconds', now() - interval '60 days',
				'5.15.0-107-generic', 'amd64', 'applied', '107.1', 'stale-' || i
			FROM generate_series(1, %[2]d) i
			JOIN tiers t ON t.name = 'stable'
			JOIN auth_tokens a ON a.label = 'soak-stable'`,
			staleStart, stale, int(span.Seconds())),
		fmt.Sprintf(`INSERT INTO machine_reports (machine_id, reported_at, kernel, architecture, cpu_model,
				boot_time, uptime, client_version, patch_state, patch_version)
			SELECT md5('soak-' || (1 + j %% %[1]d)), %[2]s + (j::float8 / %[3]d) * interval '%[4]d seconds',
				k.release, k.arch, 'AMD EPYC 7B13', %[5]s::timestamptz, 864000, '10.8.3', 'applied', k.version
			FROM generate_series(1, %[3]d) j
			JOIN (VALUES %[6]s) AS k (idx, release, arch, version) ON k.idx = (1 + j %% %[1]d) %% %[7]d`,
			machines, retentionStart, history, int(span.Seconds()), bootAt, kernels, len(load.FleetKernels)),
		`VACUUM (ANALYZE) machines`,
		`VACUUM (ANALYZE) machine_reports`,
		`VACUUM (ANALYZE) machine_changes`,
	}
}

func sqlQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// tableSizes is what the soak reads of each table at a moment.
type tableSizes struct {
	at     time.Time
	tables map[string]tableSize
}

type tableSize struct {
	heap, indexes   int64 // bytes
	live, dead      int64 // n_live_tup, n_dead_tup
	inserted, gone  int64 // n_tup_ins, n_tup_del (cumulative)
	autovacuumCount int64
}

// readSizes reads the sizes and tuple counts of the soak tables.
func readSizes(ctx context.Context, db *sql.DB) (tableSizes, error) {
	s := tableSizes{at: time.Now(), tables: map[string]tableSize{}}
	for _, name := range soakTables {
		var t tableSize
		err := db.QueryRowContext(ctx, `
			SELECT pg_table_size(relid), pg_indexes_size(relid), n_live_tup, n_dead_tup, n_tup_ins, n_tup_del, autovacuum_count
			FROM pg_stat_user_tables WHERE relname = $1`, name).
			Scan(&t.heap, &t.indexes, &t.live, &t.dead, &t.inserted, &t.gone, &t.autovacuumCount)
		if err != nil {
			return s, fmt.Errorf("cannot read the size of %s: %w", name, err)
		}
		s.tables[name] = t
	}
	return s, nil
}

func (s tableSizes) total() int64 {
	var n int64
	for _, t := range s.tables {
		n += t.heap + t.indexes
	}
	return n
}

// soakStride returns a step coprime with n, so that machine (i*stride mod n)+1 visits
// every machine once per n check-ins, in an order unrelated to their ids or rows.
func soakStride(n int) int {
	gcd := func(a, b int) int {
		for b != 0 {
			a, b = b, a%b
		}
		return a
	}
	s := 7919 % max(n, 1)
	for s < 1 || gcd(s, n) != 1 {
		s++
	}
	return s
}

// soak runs b.soakMachines distinct machines checking in at b.soakRate per second through
// haproxy to two units for b.soakDuration, the units' retention and stale-machine jobs
// running every minute on a database seeded so that both have work all along, and
// reports the latency of every minute and the tables' sizes at the start, middle and end.
func (b *bench) soak(ctx context.Context) error {
	if err := b.pg.CreateDatabase(ctx, "soak"); err != nil {
		return err
	}
	dsn := b.pg.DSN("soak")
	base := load.Unit{DSN: dsn, URLTemplate: "http://" + haproxyHost + "/patches/{filename}",
		RetentionDays: soakRetentionDays, StaleAfterDays: soakStaleDays, CleanupInterval: soakCleanup}
	if err := b.schemaUpgrade(ctx, "soak", base); err != nil {
		return err
	}
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	machines, rate, dur := b.soakMachines, b.soakRate, b.soakDuration
	boot := time.Now().Add(-10 * 24 * time.Hour).Truncate(time.Second)
	b.logf("Soak: seeding %d machines, the stale ones and the history retention removes during %s", machines, dur)
	seedStart := time.Now()
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, `SET synchronous_commit = off`); err != nil {
		conn.Close()
		return err
	}
	for _, stmt := range soakSeedSQL(machines, rate, dur, boot) {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			conn.Close()
			return fmt.Errorf("cannot seed the soak: %w\n%s", err, stmt)
		}
	}
	conn.Close()
	seedTook := time.Since(seedStart)
	b.logf("Soak: seeded in %s", seedTook.Round(time.Second))

	var units []*unit
	var procs []*load.Process
	for i, host := range []string{unit1Host, unit2Host} {
		un, err := b.startUnit(ctx, fmt.Sprintf("soak%d", i+1), host, base)
		if err != nil {
			return err
		}
		defer b.stop(un.proc)
		units = append(units, un)
		procs = append(procs, un.proc)
	}
	px, err := b.startHAProxy(ctx, "haproxy-soak", []load.Frontend{{Name: "soak", Servers: []string{units[0].addr, units[1].addr}}})
	if err != nil {
		return err
	}
	defer b.stop(px.proc)

	// A body per kernel: a machine reports what the seed stored for it.
	bodies := make([][]byte, len(load.FleetKernels))
	for i, k := range load.FleetKernels {
		st := server.Status{Kernel: k.Release, Architecture: k.Architecture, CPUModel: "AMD EPYC 7B13", BootTime: boot,
			Uptime: 864000, ClientVersion: "10.8.3", PatchState: server.StateApplied, PatchVersion: k.PatchVersion}
		if err := st.Check(); err != nil {
			return fmt.Errorf("soak status of %s: %w", k.Release, err)
		}
		if bodies[i], err = json.Marshal(st); err != nil {
			return err
		}
	}
	url := px.urls["soak"]
	hc := load.NewHTTPClient(b.size.openConc)
	defer hc.CloseIdleConnections()
	stride := soakStride(machines)
	sent := 0 // check-ins handed out so far: the next machine is where the last minute stopped
	checkIn := func(ctx context.Context, i int) (int64, error) {
		n := int((int64(sent+i)*int64(stride))%int64(machines)) + 1
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/client/"+soakMachineID(n)+"/updates", bytes.NewReader(bodies[n%len(bodies)]))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+soakToken(n))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "lpbench")
		return load.Send(hc, req, http.StatusOK)
	}

	start, err := readSizes(ctx, db)
	if err != nil {
		return err
	}
	snaps := []tableSizes{start}
	var minutes []soakMinute
	middle, worst := -1, time.Duration(0)
	allOK := true
	b.logf("Soak: %d machines checking in at %.0f/s for %s through haproxy", machines, rate, dur)
	soakStart := time.Now()
	for left := dur; left > 0 && ctx.Err() == nil; left -= soakStep {
		plan := load.Plan{Mode: load.OpenLoop, Rate: rate, Concurrency: b.size.openConc, Duration: min(left, soakStep)}
		st, err := b.measure(ctx, plan, procs, px.proc, checkIn)
		if err != nil {
			return err
		}
		sent += st.res.Sent
		sizes, err := readSizes(ctx, db)
		if err != nil {
			return err
		}
		snaps = append(snaps, sizes)
		minutes = append(minutes, soakMinute{st.res, sizes, st.cpu})
		r := st.res
		p99 := r.Latency.Quantile(0.99)
		worst = max(worst, p99)
		if p99 >= p99Limit || r.ErrorCount() > 0 || r.Throughput() < 0.97*rate {
			allOK = false
		}
		if middle < 0 && time.Since(soakStart) >= dur/2 {
			middle = len(snaps) - 1
		}
		b.logf("Soak minute %d: achieved %.0f/s, p50 %s, p99 %s, errors %d %s; machine_reports %s live, %s dead, %.1f MB",
			len(minutes), r.Throughput(), load.Millis(r.Latency.Quantile(0.5)), load.Millis(p99), r.ErrorCount(), r.ErrorSummary(),
			load.Count(int(sizes.tables["machine_reports"].live)), load.Count(int(sizes.tables["machine_reports"].dead)),
			float64(sizes.tables["machine_reports"].heap+sizes.tables["machine_reports"].indexes)/1e6)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if middle < 0 {
		middle = len(snaps) - 1
	}
	end := snaps[len(snaps)-1]
	var hwm int64
	for _, un := range units {
		_, h, err := load.ProcessMemory(un.proc.Pid())
		if err != nil {
			return err
		}
		hwm = max(hwm, h)
	}
	b.soakReport(machines, rate, dur, seedTook, start, snaps[middle], end, soakRows(minutes, start), worst, allOK, hwm)
	return nil
}

// soakMinute is what one minute of the soak measured, and the tables at its end.
type soakMinute struct {
	res   *load.Result
	sizes tableSizes
	cpu   cpuUse
}

// soakRows returns the rows of the soak table, one per minute.
func soakRows(ms []soakMinute, start tableSizes) [][]string {
	var rows [][]string
	prev := start
	for i, m := range ms {
		r := m.res
		errs := "0"
		if n := r.ErrorCount(); n > 0 {
			errs = strings.ReplaceAll(r.ErrorSummary(), "|", "/")
		}
		rep, prevRep := m.sizes.tables["machine_reports"], prev.tables["machine_reports"]
		mach, prevMach := m.sizes.tables["machines"], prev.tables["machines"]
		rows = append(rows, []string{
			fmt.Sprint(i + 1), fmt.Sprintf("%.0f", r.Throughput()), load.Millis(r.Latency.Quantile(0.5)),
			load.Millis(r.Latency.Quantile(0.99)), load.Millis(r.Latency.Max()), errs,
			load.Count(int(rep.inserted - prevRep.inserted)), load.Count(int(rep.gone - prevRep.gone)),
			load.Count(int(mach.gone - prevMach.gone)),
			fmt.Sprintf("%.1f", float64(m.sizes.total())/1e6), m.cpu.String(),
		})
		prev = m.sizes
	}
	return rows
}

// soakReport adds the soak's rows and section to the report.
func (b *bench) soakReport(machines int, rate float64, dur, seedTook time.Duration, start, middle, end tableSizes,
	rows [][]string, worst time.Duration, allOK bool, hwm int64) {
	note := fmt.Sprintf("%s machines at %.0f/s for %s", load.Count(machines), rate, dur)
	growth := float64(end.total()) / float64(max(middle.total(), 1))
	b.report.Summary = append(b.report.Summary,
		load.Row{ID: "5a", Measurement: "soak: check-ins through haproxy to 2 units, retention and stale-machine jobs running, " + note,
			Result: fmt.Sprintf("worst minute p99 %s over %d minutes", load.Millis(worst), len(rows)), Ceiling: "-", Ratio: "-",
			Target: "p99 < 100 ms every minute, no errors, rate held", Met: load.Verdict(allOK)},
		load.Row{ID: "5b", Measurement: "soak: machines, machine_reports and machine_changes with their indexes, middle to end",
			Result: fmt.Sprintf("%.1f MB at the start, %.1f MB in the middle, %.1f MB at the end (x%.2f)",
				float64(start.total())/1e6, float64(middle.total())/1e6, float64(end.total())/1e6, growth),
			Ceiling: "-", Ratio: "-", Target: fmt.Sprintf("stops growing (end ≤ %.2f × middle)", soakGrowthLimit), Met: load.Verdict(growth <= soakGrowthLimit)},
		load.Row{ID: "5c", Measurement: "soak: server resident memory at the end (peak VmHWM of the 2 units)",
			Result: fmt.Sprintf("%.1f MB", float64(hwm)/1e6), Ceiling: "-", Ratio: "-", Target: "< 150 MB", Met: load.Verdict(float64(hwm) < memoryLimit)},
	)
	sec := load.Section{
		Title: "5. Soak",
		Text: fmt.Sprintf(`%s distinct machines (seeded in SQL with the status they report, %s with the
history and stale machines) check in open loop at %.0f/s through haproxy to two units for %s, a
minute per row. The units run with machine-reports.retention-days %d, stale-after-days %d and
cleanup-interval %s; the seed holds history rows crossing the retention cutoff at %.0f/s and stale
machines crossing the stale cutoff at %d/s from one interval before the start, so that the jobs
delete all along what the check-ins add. Columns: check-in rows inserted and deleted
(pg_stat_user_tables n_tup_ins, n_tup_del of machine_reports) and machines removed as stale in the
minute, the three tables' size with indexes at its end, cores gen / px / srv / pg.`,
			load.Count(machines), seedTook.Round(time.Second), rate, dur, soakRetentionDays, soakStaleDays, soakCleanup, rate, soakStaleRate),
		Header: []string{"minute", "achieved/s", "p50", "p99", "max", "errors", "reports in", "reports out", "stale out", "tables MB", "cores gen / px / srv / pg"},
	}
	sec.Rows = rows
	sizes := load.Section{
		Title:  "5. Soak: table sizes",
		Text:   "Heap and index sizes (pg_table_size, pg_indexes_size) and tuple counts (n_live_tup, n_dead_tup) at the start, the middle and the end of the soak, with the autovacuum runs so far.",
		Header: []string{"table", "when", "heap MB", "indexes MB", "live", "dead", "autovacuums"},
	}
	for _, name := range soakTables {
		for _, w := range []struct {
			when string
			s    tableSizes
		}{{"start", start}, {"middle", middle}, {"end", end}} {
			t := w.s.tables[name]
			sizes.Rows = append(sizes.Rows, []string{name, w.when, fmt.Sprintf("%.1f", float64(t.heap)/1e6), fmt.Sprintf("%.1f", float64(t.indexes)/1e6),
				load.Count(int(t.live)), load.Count(int(t.dead)), fmt.Sprint(t.autovacuumCount)})
		}
	}
	b.report.Sections = append(b.report.Sections, sec, sizes)
}
