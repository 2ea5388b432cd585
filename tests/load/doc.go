// Package load is the load and benchmark harness of the livepatch on-prem server: a load
// generator with open-loop (constant rate, latency from the moment a request was due) and
// closed-loop (maximum rate) modes and log-linear latency histograms; the configs of the
// benchmark stack (haproxy, nginx, livepatch-server units, PostgreSQL); process
// supervision that leaves nothing running; the million-machine fleet fixture; and the
// report written to docs/benchmarks.md.
//
// The harness itself is tests/load/cmd/lpbench, run by make bench. The tests of this
// package check its arithmetic and its rendered configs; they never run load.
package load
