#!/usr/bin/env bash
# make demo: deploys bundle/bundle.yaml in the Juju model emulator (jujusim) and walks the
# deployment guide (Canonical's on-prem deployment guide, as bundle/README.md retells it) the way
# an operator types it, with jujusim in place of juju: configure, attach to Ubuntu Pro,
# get the resource token, sync patches from an upstream server, log in with
# livepatch-admin, issue an auth token, enrol a machine with livepatch-client. The model
# keeps running afterwards; `make demo-down` (this script with "down") removes it.
#
# `make demo-chain` (this script with "chain") makes that deployment a central one that
# serves downstream servers (sync_server=true), then deploys a regional one in a second
# model that syncs from the central haproxy with a sync token and the central signing key,
# and enrols a machine at the regional server. `make demo-chain-down` removes both.
#
# Needs Go, make, haproxy, PostgreSQL and htpasswd: `make demo` runs ./.ci/deps first,
# which installs the missing ones through apt (as root, or with sudo).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DEMO=$ROOT/build/demo
export JUJUSIM_HOME=$DEMO/model
# The regional model of the chain: jujusim --model-dir, as juju -m <model>.
REGIONAL_HOME=$DEMO/regional
RJ="jujusim --model-dir build/demo/regional"
export PATH=$ROOT/build/bin:$PATH
CONTRACT_TOKEN=demo-contract-token
ADMIN_PASSWORD=demo-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
MACHINE_ID=demo-machine-0001
KERNEL=5.15.0-107-generic

bold() { if [ -t 1 ]; then printf '\n\033[1m== %s\033[0m\n' "$*"; else printf '\n== %s\n' "$*"; fi; }
# run prints a command as the operator types it, then runs exactly that.
run() { printf '\n$ %s\n' "$1"; eval "$1"; }
# app_status shows one application's line of jujusim status (of the model $2 names with
# --model-dir, else the central one).
app_status() { jujusim ${2:+--model-dir "$2"} status | grep -E "^(App|$1) "; }
# quietly runs a command and shows its output only when it fails.
quietly() {
  local log=$DEMO/build.log
  if ! "$@" >>"$log" 2>&1; then
    echo "failed: $*; see $log" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
}

down() {
  if [ -x build/bin/jujusim ] && [ -d "$REGIONAL_HOME" ]; then
    build/bin/jujusim --model-dir "$REGIONAL_HOME" destroy-model --no-prompt || true
  fi
  if [ -x build/bin/jujusim ] && [ -d "$JUJUSIM_HOME" ]; then
    build/bin/jujusim destroy-model --no-prompt || true
  fi
  if [ -x build/bin/demo-upstream ] && [ -d "$DEMO/upstream" ]; then
    build/bin/demo-upstream stop --dir "$DEMO/upstream" || true
  fi
  rm -rf "$DEMO"
}

CHAIN=
case "${1:-}" in
  down)
    down
    echo "Demo torn down."
    exit 0
    ;;
  chain) CHAIN=1 ;;
  "") ;;
  *)
    echo "usage: $0 [chain|down]" >&2
    exit 2
    ;;
esac

if ! command -v go >/dev/null 2>&1; then
  echo "make demo needs Go 1.26 on PATH: https://go.dev/dl/" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "make demo must run as root (sudo make demo): the emulated haproxy binds port 80 and PostgreSQL runs as the postgres user" >&2
  exit 1
fi

start=$(date +%s)
down >/dev/null 2>&1
mkdir -p "$DEMO"
trap 'echo; echo "The demo stopped with an error. Logs: $DEMO/build.log, $JUJUSIM_HOME/controller.log; tear down with: make demo-down" >&2' ERR

bold "Building the binaries and the charms (make build, make jujusim, make charms)"
# One go build for every program, with the flags make charms uses (CGO_ENABLED=0,
# -trimpath), so that the charms reuse what it compiled: this halves a cold build.
export CGO_ENABLED=0 GOFLAGS=-trimpath
VERSION=$(git describe --always --dirty 2>/dev/null || echo dev)
quietly go build -ldflags "-X main.version=$VERSION" -o build/bin/ ./cmd/livepatch-server ./cmd/livepatch-admin \
  ./cmd/livepatch-client ./tests/cmd/jujusim ./tests/demo/demo-upstream
quietly make -s charms
unset CGO_ENABLED GOFLAGS
echo "built build/bin/{livepatch-server,livepatch-admin,livepatch-client,jujusim}, build/livepatch.charm and build/ubuntu-advantage.charm in $(( $(date +%s) - start ))s"

bold "Starting the stand-ins for Canonical's services: Ubuntu Pro contracts and an upstream livepatch server"
run "jujusim bootstrap --contracts-token $CONTRACT_TOKEN"
CONTRACTS_URL=$(jujusim contracts-url)
echo "contracts server stand-in: $CONTRACTS_URL"
printf '\n$ demo-upstream start --dir build/demo/upstream ...   # livepatch-server + its own PostgreSQL + demo patches\n'
eval "$(demo-upstream start --dir "$DEMO/upstream" --server build/bin/livepatch-server --contracts-url "$CONTRACTS_URL")"
echo "upstream livepatch server: $UPSTREAM_URL (signing key $UPSTREAM_PUBLIC_KEY)"

bold "Deploying the bundle"
run "jujusim deploy ./bundle/bundle.yaml --overlay ./bundle/local-overlay.yaml"
run "jujusim wait --status livepatch=blocked --status haproxy=active --status postgresql=active"
run "jujusim status"
HAPROXY=$(jujusim exec --unit haproxy/0 -- unit-get private-address)
echo "haproxy listens on http://$HAPROXY"

bold "Configuring livepatch, as the deployment guide says"
echo "# emulator only: the stand-ins instead of contracts.canonical.com and livepatch.canonical.com"
run "jujusim config livepatch contract_server_url=$CONTRACTS_URL sync_upstream=$UPSTREAM_URL sync_upstream_tier=stable"
if grep -q '^  sync_trusted_key:' charms/livepatch/config.yaml; then
  echo "# the upstream's signing.pub: the servers verify the signature of its patch lists"
  run "jujusim config livepatch sync_trusted_key=$UPSTREAM_PUBLIC_KEY"
fi
if [ -n "$CHAIN" ]; then
  echo "# the central deployment of the chain: it serves downstream servers with its own signing key"
  run "jujusim config livepatch sync_server=true"
fi
run "jujusim configure livepatch url_template='http://$HAPROXY/v1/patches/{filename}'"
run "jujusim wait --status livepatch=blocked"
app_status livepatch
printf '\n$ htpasswd -bnBC 10 admin %s\n' "$ADMIN_PASSWORD"
HASH=$(htpasswd -bnBC 10 admin "$ADMIN_PASSWORD")
echo "$HASH"
run "jujusim config livepatch auth_basic_users='$HASH'"
echo "# emulator only: contract_url points the pro client at the contracts stand-in"
run "jujusim config ubuntu-advantage contract_url=$CONTRACTS_URL token=$CONTRACT_TOKEN"
run "jujusim wait --status ubuntu-advantage=active"
app_status ubuntu-advantage
run "jujusim run-action livepatch/leader get-resource-token --wait"
run "jujusim wait --status livepatch=active"
app_status livepatch

bold "Managing the server with livepatch-admin, through haproxy"
export LIVEPATCH_ADMIN_CONFIG_DIR=$DEMO/admin
echo "# the demo keeps its admin session in $LIVEPATCH_ADMIN_CONFIG_DIR, not in ~/.config"
run "LIVEPATCH_URL='http://$HAPROXY' livepatch-admin login -a admin:$ADMIN_PASSWORD"
export LIVEPATCH_URL=http://$HAPROXY
# The servers sync at start, once they have the resource token: wait for the first run.
for i in $(seq 1 60); do
  livepatch-admin sync status --format json | grep -q '"last-success"' && break
  [ "$i" = 60 ] && { livepatch-admin sync status; exit 1; }
  sleep 0.25
done
run "livepatch-admin sync reports"
run "livepatch-admin patch list"
run "livepatch-admin patch promote 107.1 stable"
printf '\n$ livepatch-admin auth-token demo-machines stable\n'
TOKEN=$(livepatch-admin auth-token demo-machines stable)
echo "$TOKEN"

bold "Enrolling a machine with livepatch-client"
echo "# --state-dir, mode=no-apply, machine-id and kernel stand in for a real machine (docs/client.md)"
MACHINE=build/demo/machine
run "livepatch-client --state-dir $MACHINE config remote-server=http://$HAPROXY mode=no-apply machine-id=$MACHINE_ID kernel=$KERNEL trusted-key=$UPSTREAM_PUBLIC_KEY"
run "livepatch-client --state-dir $MACHINE enable $TOKEN"
run "livepatch-client --state-dir $MACHINE status --verbose"
run "livepatch-admin report machines stable"

bold "The model"
run "jujusim status"

if [ -n "$CHAIN" ]; then
  bold "Chaining: a regional deployment syncs from this central one"
  echo "# the central signing key (kept in a Juju secret) and a sync token for the regional server"
  printf '\n$ jujusim run livepatch/leader get-signing-key\n'
  KEYS=$(jujusim run livepatch/leader get-signing-key)
  echo "$KEYS"
  CENTRAL_KEYS=$(echo "$KEYS" | awk '/^trusted-keys:/ {print $2}')
  printf '\n$ livepatch-admin sync-tokens add stable region-eu\n'
  SYNC_TOKEN=$(livepatch-admin sync-tokens add stable region-eu)
  echo "$SYNC_TOKEN"

  echo "# a second model (juju -m regional), with its own contracts stand-in"
  run "$RJ bootstrap --contracts-token $CONTRACT_TOKEN"
  run "$RJ deploy ./bundle/bundle.yaml --overlay ./bundle/local-overlay.yaml"
  run "$RJ wait --status livepatch=blocked --status haproxy=active --status postgresql=active"
  REGIONAL=$($RJ exec --unit haproxy/0 -- unit-get private-address)
  echo "regional haproxy listens on http://$REGIONAL"
  echo "# emulator only: contract_server_url points at the regional model's contracts stand-in"
  run "$RJ config livepatch contract_server_url=$($RJ contracts-url)"
  run "$RJ config livepatch sync_upstream=http://$HAPROXY sync_upstream_tier=stable sync_token=$SYNC_TOKEN sync_trusted_key=$CENTRAL_KEYS"
  run "$RJ config livepatch url_template='http://$REGIONAL/v1/patches/{filename}' auth_basic_users='$HASH'"
  run "$RJ wait --status livepatch=active"
  app_status livepatch "$REGIONAL_HOME"

  run "LIVEPATCH_URL='http://$REGIONAL' livepatch-admin login -a admin:$ADMIN_PASSWORD"
  export LIVEPATCH_URL=http://$REGIONAL
  for i in $(seq 1 60); do
    livepatch-admin sync status --format json | grep -q '"last-success"' && break
    [ "$i" = 60 ] && { livepatch-admin sync status; exit 1; }
    sleep 0.25
  done
  run "livepatch-admin sync status"
  run "livepatch-admin patch list"
  run "livepatch-admin patch promote 107.1 stable"
  printf '\n$ livepatch-admin auth-token regional-machines stable\n'
  REGIONAL_TOKEN=$(livepatch-admin auth-token regional-machines stable)
  echo "$REGIONAL_TOKEN"
  echo "# the machine trusts the origin's key: the upstream signed the patch, the central and regional servers pass its signature on"
  REGIONAL_MACHINE=build/demo/regional-machine
  run "livepatch-client --state-dir $REGIONAL_MACHINE config remote-server=http://$REGIONAL mode=no-apply machine-id=demo-machine-0002 kernel=$KERNEL trusted-key=$UPSTREAM_PUBLIC_KEY"
  run "livepatch-client --state-dir $REGIONAL_MACHINE enable $REGIONAL_TOKEN"
  run "livepatch-client --state-dir $REGIONAL_MACHINE status --verbose"
  echo "# the central server sees its downstream"
  run "LIVEPATCH_URL=http://$HAPROXY livepatch-admin report downstream"
  run "$RJ status"
fi

cat >"$DEMO/env" <<EOF
export PATH=$ROOT/build/bin:\$PATH
export JUJUSIM_HOME=$JUJUSIM_HOME
export LIVEPATCH_URL=http://$HAPROXY
export LIVEPATCH_ADMIN_CONFIG_DIR=$LIVEPATCH_ADMIN_CONFIG_DIR
EOF
bold "Done in $(( $(date +%s) - start ))s. The model keeps running: poke at it"
cat <<EOF
  source build/demo/env                 # PATH, JUJUSIM_HOME, LIVEPATCH_URL=http://$HAPROXY
  jujusim status                        # the model; also: jujusim debug-log --replay, show-unit livepatch/0
  livepatch-admin login -a admin:$ADMIN_PASSWORD
  livepatch-admin tier list; livepatch-admin patch list; livepatch-admin sync status
  livepatch-client --state-dir $MACHINE status --verbose
  curl http://$HAPROXY/debug/status
  jujusim add-unit livepatch -n 2 && jujusim wait   # scale out
  upstream: $UPSTREAM_URL (admin $UPSTREAM_ADMIN:$UPSTREAM_PASSWORD, log $UPSTREAM_LOG)
EOF
if [ -n "$CHAIN" ]; then
  cat <<EOF
  $RJ status   # the regional model; its haproxy: http://$REGIONAL
  LIVEPATCH_URL=http://$REGIONAL livepatch-admin sync status
  LIVEPATCH_URL=http://$HAPROXY livepatch-admin sync-tokens revoke region-eu   # then sync trigger --wait on the regional one
  livepatch-client --state-dir $REGIONAL_MACHINE status --verbose
EOF
fi
cat <<EOF

Tear it down:
  make demo-down                        # jujusim destroy-model --no-prompt (both models), stops the upstream and its PostgreSQL
EOF
