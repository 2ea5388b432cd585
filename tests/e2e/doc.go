// Package e2e holds the end-to-end scenarios of issue 5: the charms deployed with
// bundle/bundle.yaml in the Juju model emulator (tests/jujusim) with real haproxy, real
// PostgreSQL, the contracts stand-in and an upstream livepatch-server, driven the way an
// operator drives them (the deployment guide's steps, the built livepatch-admin and
// livepatch-client binaries), through package tests/e2e/deploy.
//
//   - TestDeployment: one deployment through three scenarios in turn: the deployment guide
//     step by step, scale-out under a stream of check-ins, and a rolling upgrade to a charm
//     revision whose server brings a schema migration.
//   - TestBadConfiguration: each configuration mistake is a Blocked status saying what to
//     fix, and fixing it recovers without manual steps.
//   - TestPostgreSQLDatabaseTLS, TestPostgreSQLTLSLater, TestPostgreSQLLegacyReplicas: the
//     database relation with TLS from the start and turned on later, the legacy db relation
//     with a replica and a switchover, under check-ins that must all be kept.
//   - TestS3IntegratorPatchstore: patchstore s3 through the s3-integrator stand-in and a
//     real SeaweedFS: Blocked while the bucket is missing and while the keys are refused,
//     recovering when fixed; a machine downloads a synced patch from the bucket.
//   - TestS3IntegratorSecretPatchstore: the same through s3-integrator 2/, the keys in Juju
//     secrets (a user secret for s3-integrator, secret-extra for livepatch).
//   - TestRollout: rollout policies through two units behind haproxy, from the machines'
//     side: canaries, a rate-limited wave, a halt on apply failures, a resume, and a
//     maintenance window that opens by the servers' clocks.
package e2e
