package load

import (
	"fmt"
	"strings"
)

// FleetKernel is one kernel of the benchmark fleet: what uname -r says, the architecture,
// the patch version machines on it run, and its share of the fleet (weight).
type FleetKernel struct {
	Release      string
	Architecture string
	PatchVersion string
	Weight       float64
}

// FleetKernels is the fleet's kernel mix: a few LTS kernels dominate, cloud flavours and
// an old ESM kernel make a long tail, one machine in ten is arm64.
var FleetKernels = []FleetKernel{
	{"5.15.0-107-generic", "amd64", "107.1", 24},
	{"6.8.0-31-generic", "amd64", "31.1", 16},
	{"5.15.0-105-generic", "amd64", "105.2", 10},
	{"6.8.0-35-generic", "amd64", "35.1", 8},
	{"5.4.0-182-generic", "amd64", "182.1", 8},
	{"5.15.0-1060-aws", "amd64", "1060.1", 6},
	{"6.5.0-35-generic", "amd64", "35.2", 5},
	{"6.8.0-1008-azure", "amd64", "1008.1", 5},
	{"5.15.0-107-generic", "arm64", "107.1", 5},
	{"6.8.0-31-generic", "arm64", "31.1", 4},
	{"4.15.0-213-generic", "amd64", "213.1", 4},
	{"5.15.0-1055-gcp", "amd64", "1055.1", 3},
	{"6.8.0-31-lowlatency", "amd64", "31.1", 2},
}

// Weighted is one choice of a weighted pick.
type Weighted struct {
	Value  string
	Weight float64
}

// FleetTiers is how the fleet spreads over the default tiers: most machines on stable, a
// canary slice ahead of them.
var FleetTiers = []Weighted{{"edge", 5}, {"beta", 10}, {"candidate", 15}, {"stable", 70}}

// FleetStates is the mix of patch states a healthy fleet reports.
var FleetStates = []Weighted{
	{"applied", 82}, {"nothing-to-apply", 6}, {"unapplied", 3}, {"kernel-upgrade-required", 3},
	{"needs-check", 2}, {"apply-failed", 1.5}, {"check-failed", 1.5}, {"unknown", 1},
}

// statesWithPatch are the states in which a machine reports the version of its patch.
var statesWithPatch = []string{"applied", "unapplied", "needs-check", "apply-failed"}

// PickSQL returns a CASE expression choosing among choices by the value of r, a uniform
// random number in [0, 1): each choice takes its share of the interval.
func PickSQL(r string, choices []Weighted) string {
	var total float64
	for _, c := range choices {
		total += c.Weight
	}
	var b strings.Builder
	b.WriteString("CASE")
	var acc float64
	for _, c := range choices[:len(choices)-1] {
		acc += c.Weight
		fmt.Fprintf(&b, " WHEN %s < %.6f THEN %s", r, acc/total, quote(c.Value))
	}
	fmt.Fprintf(&b, " ELSE %s END", quote(choices[len(choices)-1].Value))
	return b.String()
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// FleetSQL returns the statements that fill a freshly migrated database with machines
// enrolled machines and their report history, straight into the real schema: one auth
// token per tier, machines spread over tiers, kernels and states as above, last seen
// within the hour for most, hostnames host-1, host-2, ..., one in ten tagged role=db,
// and 3 to 10 history rows each, 15 days apart, so that about a fifth of the history is
// older than the default 90 days of retention, and three changes each (enabled, first
// check-in, last change of state). Run them in one session: setseed makes the fleet the
// same every time.
func FleetSQL(machines int) []string {
	kernelChoices := make([]Weighted, len(FleetKernels))
	values := make([]string, len(FleetKernels))
	for i, k := range FleetKernels {
		kernelChoices[i] = Weighted{fmt.Sprint(i), k.Weight}
		values[i] = fmt.Sprintf("(%d, %s, %s, %s)", i, quote(k.Release), quote(k.Architecture), quote(k.PatchVersion))
	}
	withPatch := make([]string, len(statesWithPatch))
	for i, s := range statesWithPatch {
		withPatch[i] = quote(s)
	}
	return []string{
		`SELECT setseed(0.42)`,
		`INSERT INTO auth_tokens (label, tier_id, token_hash)
			SELECT 'fleet-' || name, id, sha256(('fleet-' || name)::bytea) FROM tiers`,
		fmt.Sprintf(`INSERT INTO machines (id, tier_id, auth_token_id, machine_token_hash, enabled_at,
				first_seen, last_seen, state_since, kernel, architecture, cpu_model, boot_time, uptime,
				client_version, patch_state, patch_version, hostname, tags)
			SELECT s.id, t.id, a.id, sha256(s.id::bytea), s.last_seen - s.age, s.last_seen - s.age,
				s.last_seen, s.last_seen - s.age / 3, k.release, k.arch, 'AMD EPYC 7B13', s.last_seen - s.uptime * interval '1 second',
				s.uptime, '10.8.3', s.state,
				CASE WHEN s.state IN (%s) THEN k.version ELSE '' END,
				'host-' || s.i, CASE WHEN s.i %% 10 = 0 THEN '{"role": "db"}'::jsonb ELSE '{}'::jsonb END
			FROM (
				SELECT i, md5('machine-' || i) AS id,
					%s AS tier,
					(%s)::int AS kernel,
					%s AS state,
					now() - CASE WHEN r_seen < 0.92 THEN random() * interval '1 hour'
						ELSE random() * interval '30 days' END AS last_seen,
					interval '30 days' + random() * interval '335 days' AS age,
					(random() * 60 * 86400)::bigint AS uptime
				FROM (
					-- One draw per choice and row: a CASE would draw again at every WHEN.
					SELECT i, random() AS r_tier, random() AS r_kernel, random() AS r_state, random() AS r_seen
					FROM generate_series(1, %d) AS i
				) g
			) s
			JOIN (VALUES %s) AS k (idx, release, arch, version) ON k.idx = s.kernel
			JOIN tiers t ON t.name = s.tier
			JOIN auth_tokens a ON a.label = 'fleet-' || s.tier AND a.revoked_at IS NULL`,
			strings.Join(withPatch, ", "),
			PickSQL("r_tier", FleetTiers), PickSQL("r_kernel", kernelChoices), PickSQL("r_state", FleetStates),
			machines, strings.Join(values, ", ")),
		`INSERT INTO machine_reports (machine_id, reported_at, kernel, architecture, cpu_model,
				boot_time, uptime, client_version, patch_state, patch_version)
			SELECT m.id, m.last_seen - j * interval '15 days' - random() * interval '12 hours',
				m.kernel, m.architecture, m.cpu_model, m.boot_time, m.uptime, m.client_version,
				m.patch_state, m.patch_version
			FROM machines m,
				generate_series(0, 2 + ('x' || substr(m.id, 1, 7))::bit(28)::int % 8) AS j`,
		`INSERT INTO machine_changes (machine_id, changed_at, cause, tier, kernel, patch_state, patch_version)
			SELECT m.id, c.at, c.cause, t.name, c.kernel, c.state, c.version
			FROM machines m JOIN tiers t ON t.id = m.tier_id,
				LATERAL (VALUES (m.enabled_at, 'enable', '', '', ''),
					(m.enabled_at + interval '1 minute', 'check-in', m.kernel, 'applied', ''),
					(m.state_since, 'check-in', m.kernel, m.patch_state, m.patch_version)) AS c (at, cause, kernel, state, version)`,
	}
}

// FleetVacuumSQL settles the fleet as a database in steady state is: statistics current,
// visibility maps set, so that autovacuum does not start in the middle of a measurement.
var FleetVacuumSQL = []string{
	`VACUUM (ANALYZE) machines`,
	`VACUUM (ANALYZE) machine_reports`,
	`VACUUM (ANALYZE) machine_changes`,
	`VACUUM (ANALYZE) auth_tokens`,
}
