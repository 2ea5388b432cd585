// Package jujusim emulates a Juju controller and its unit agents on one host, so charms can be
// deployed, related, configured and torn down in tests without Juju.
//
// A Model owns applications, units, machines and relations. Every unit runs an agent goroutine
// that, like Juju's uniter, compares the model with what the unit has already seen and runs the
// next hook (install, relation-created, leader-elected, config-changed, start, relation
// joined/changed/departed/broken, stop, remove, update-status) or a queued action. Hooks are real
// processes: the charm's dispatch (or hooks/<name>) runs with the environment Juju builds, and
// calls hook tools, which are one multi-call binary (see MultiCall) talking to the model over a
// unix socket. Relation data, ports and unit state are committed only when the hook exits 0.
// As in Juju 3.6, a failed hook is retried with the uniter's backoff (unless the model config
// automatically-retry-hooks is false), leadership is a lease that outlives a removed leader
// by up to a minute, and both run on Options.Clock; random choices follow Options.Seed.
//
// Each machine has its own loopback address and its own filesystem root (JUJU_SIM_ROOT), and a
// systemctl stand-in on the hook PATH whose services are real processes owned by the model.
// haproxy and postgresql are stand-in charms (tests/standin) run through the same machinery.
package jujusim
