// Package deploy gives end-to-end tests a Livepatch on-premises deployment made the way an
// operator makes it: bundle/bundle.yaml with the locally built charms deployed in the Juju
// model emulator (tests/jujusim, in-process), real haproxy and PostgreSQL behind the
// stand-in charms, the Ubuntu Pro contracts stand-in, and an upstream livepatch-server
// outside the model (its own database, a signing key, demo patches) to sync from.
//
// A test package uses it like this:
//
//	func TestMain(m *testing.M) { deploy.Main(m) } // stops the upstreams' cluster, removes the charms
//
//	func TestSomething(t *testing.T) {
//		d := deploy.Deploy(t, deploy.Options{Units: 2}) // Active, attached, synced
//		c := d.AdminClient(t)                           // admin API through haproxy
//		m := d.EnrolMachine(t, "stable")                // the built livepatch-client
//		stream := d.StartCheckIns(t, t.Context(), 20, 50) // 20 machines, 50 check-ins/s
//		...
//		if st := stream.Stop(); st.Failed > 0 { t.Errorf("lost check-ins: %v", st) }
//	}
//
// Deploy is New (bundle deployed, nothing configured: livepatch Blocked on url_template)
// followed by Configure, which runs the deployment guide's steps; each step is also a
// method (SetURLTemplate, SetAdminUsers, Attach, GetResourceToken, WaitActive,
// WaitSynced) for tests that walk the guide and check what happens in between.
//
// Build compiles the programs (livepatch-server, livepatch-admin, livepatch-client,
// jujusim) once per test run (internal/testbin) and the charms (`make charms` into a
// temporary directory, from the same builds of their programs) once per test binary;
// BuildLivepatchCharm builds other charm revisions, with build tags. The model's hook
// tools and stand-in charms are the built jujusim binary, so a test binary needs no
// jujusim.MultiCall in its TestMain.
//
// Waits are deterministic where the model announces changes (jujusim's WaitIdleStatus);
// what announces nothing (a server answering, a sync ending) is polled with a deadline.
// Every wait is bounded by Timeout. Every process is stopped when the test ends, and on
// failure the model status, the end of the debug log and every service's log are logged.
//
// Requirements: haproxy, PostgreSQL server binaries and htpasswd (make deps). Tests run as
// root here (haproxy binds port 80 on the haproxy unit's address).
package deploy
