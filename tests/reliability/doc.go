// Package reliability makes the failure and upgrade behaviour of the livepatch on-prem
// deployment a measured property. Its tests deploy the bundle in the Juju model emulator
// (tests/e2e/deploy: real haproxy, real PostgreSQL, three livepatch units, an upstream)
// and, under a continuous stream of machine check-ins through haproxy (the witness), run
// the failure drills (kill -9 of a unit's server, a PostgreSQL restart, the upstream
// disappearing in the middle of a sync, removing and adding a unit, a configuration change)
// and a rolling upgrade to a charm whose server adds a schema migration. Each drill
// records the check-ins sent, failed and retried and the time to recover; every check-in
// the servers acknowledged must be in the database at the end. A last test looks for
// secrets (tokens, passwords, the database password) in everything the scenarios
// produced: the debug log, the services' logs, every status seen, action results, CLI
// output and the argument lists of the processes.
//
// `go test` runs a short variant (a few minutes). `make reliability` runs the full one
// (LIVEPATCH_RELIABILITY=full: more machines, a higher rate, longer outages) and rewrites
// the measured table of docs/reliability.md (LIVEPATCH_RELIABILITY_REPORT=<file>).
package reliability
