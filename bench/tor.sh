#!/usr/bin/env bash
# Tor benchmark (issue 13): the first SSH over a private Tor network from a cold client.
#
# Two testbed machines: `relays` lends its network namespace to a private Tor network, offline
# (3 directory authorities and 2 relays, the `tor_network` example of clan-testbed), and `web`
# is deployed with the built-in `tor` service (an onion service for its sshd) joined to it.
# Once the service has published its descriptor, the admin's direct route to `web` is
# black-holed (an nftables drop rule in web's namespace), so tor is the only route that
# answers. Measured, wall clock, median of RUNS:
#   1. cold: `clan ssh web -- true` with no Tor data directory (clan starts tor, waits for it to
#      bootstrap, fetches the descriptor, builds the circuits, logs in);
#   2. warm: the same with the data directory the previous run left (cached consensus);
#   3. baseline: plain `ssh` through a Tor client that is already running and bootstrapped
#      (its ProxyCommand is clan's SOCKS5 connector), i.e. what is left without the start.
# The handshake time clan reports for the winning route (from the start of the race) is
# recorded for the cold runs too.
#
# Usage (as root, from the repo):  bench/tor.sh
# Env: CLAN_BIN (default target/release/clan), TOR_NETWORK_BIN (default
#      target/debug/examples/tor_network, built if missing), BENCH_DIR (default /tmp/torbench),
#      RUNS (default 5), KEEP=1 keeps the testbed running.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CLAN=${CLAN_BIN:-$REPO/target/release/clan}
TOR_NETWORK=${TOR_NETWORK_BIN:-$REPO/target/debug/examples/tor_network}
BENCH_DIR=${BENCH_DIR:-/tmp/torbench}
RUNS=${RUNS:-5}
STATE=$BENCH_DIR/testbed
CLANDIR=$BENCH_DIR/clan
RESULTS=$BENCH_DIR/results.txt

[ "$(id -u)" = 0 ] || { echo "run as root (the testbed needs it)" >&2; exit 1; }
command -v tor >/dev/null || { echo "tor is not installed (apt-get install tor)" >&2; exit 1; }
[ -x "$TOR_NETWORK" ] || (cd "$REPO" && cargo build -q -p clan-testbed --example tor_network)
rm -rf "$BENCH_DIR"; mkdir -p "$BENCH_DIR"
: > "$RESULTS"
log() { echo "== $*" >&2; }
now() { date +%s.%N; }
record() { printf '%-46s %8.3f s\n' "$1" "$2" | tee -a "$RESULTS" >&2; }
median() { sort -g | sed -n "$(( (RUNS + 1) / 2 ))p"; }

"$CLAN" testbed down --state-dir "$STATE" >/dev/null 2>&1 || true
TOR_PID=
teardown() {
    # EOF on its stdin stops the private Tor network (it stops its routers itself).
    exec 3>&- || true
    if [ -n "$TOR_PID" ]; then
        for _ in $(seq 100); do kill -0 "$TOR_PID" 2>/dev/null || break; sleep 0.1; done
    fi
    [ "${KEEP:-0}" = 1 ] || "$CLAN" testbed down --state-dir "$STATE" || true
}
trap teardown EXIT
log "starting the test machines"
"$CLAN" testbed up --state-dir "$STATE" --json --package tor relays web > "$BENCH_DIR/testbed.json"
field() { python3 -c 'import json,sys; print(eval("json.load(open(sys.argv[1]))" + sys.argv[2]))' "$BENCH_DIR/testbed.json" "$1"; }
RELAYS=$(field '["machines"][0]["address"]')
WEB=$(field '["machines"][1]["address"]')
netns_of() {
    ip netns list | awk '{print $1}' | grep -E "^clantb[0-9]+-m[0-9]+$" | while read -r ns; do
        if ip -n "$ns" -4 addr show dev eth0 2>/dev/null | grep -q " $1/"; then echo "$ns"; fi; done
}
RELAYS_NS=$(netns_of "$RELAYS")
WEB_NS=$(netns_of "$WEB")
ADMIN=${RELAYS%.*}.1

log "starting the private Tor network in $RELAYS_NS"
exec 3> >("$TOR_NETWORK" "$RELAYS_NS" "$RELAYS" "$BENCH_DIR/tor-network" > "$BENCH_DIR/tor-network.out" 2>&1)
TOR_PID=$!
for _ in $(seq 900); do [ -s "$BENCH_DIR/tor-network/client.conf" ] && break; sleep 0.2; done
SSHCFG=$BENCH_DIR/ssh_config
# The testbed's login settings for onion hosts too.
python3 -c 'import sys; t = open(sys.argv[1]).read(); assert t.count("\n  User root\n") == 1
print(t.replace("\n  User root\n", " *.onion\n  User root\n"), end="")' "$(field '["ssh_config"]')" > "$SSHCFG"

mkdir -p "$CLANDIR" "$BENCH_DIR/home" "$BENCH_DIR/cache"
export CLAN_DIR=$CLANDIR HOME=$BENCH_DIR/home XDG_CACHE_HOME=$BENCH_DIR/cache \
    SOPS_AGE_KEY_FILE=$BENCH_DIR/admin.age CLAN_SSH_CONFIG=$SSHCFG CLAN_HOST_KEY_CHECK=tofu \
    CLAN_TOR_CONFIG=$BENCH_DIR/tor-network/client.conf \
    GIT_CONFIG_GLOBAL=/dev/null GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.org \
    GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.org
{
    printf '[meta]\nname = "bench"\ndomain = "invalid"\n\n[machines.web]\ndeploy.targetHost = "root@%s"\n\n' "$WEB"
    printf '[instances.onion]\nmodule.name = "tor"\n'
    printf "roles.server.machines.web.settings = { extraConfig = '''\n%s\nLog [rend]info stdout\n''' }\n" \
        "$(cat "$BENCH_DIR/tor-network/client.conf")"
} > "$CLANDIR/clan.toml"
git -C "$CLANDIR" init -q && git -C "$CLANDIR" add clan.toml && git -C "$CLANDIR" commit -qm init
"$CLAN" vars keygen --user admin >/dev/null
log "deploying the onion service"
"$CLAN" machines update --confirm-timeout 5 >/dev/null
log "waiting for the consensus and the service's descriptor"
read -r -t 300 ready < <(tail -f "$BENCH_DIR/tor-network.out" | grep -m1 '^ready') || true
[ "${ready:-}" = ready ] || { cat "$BENCH_DIR/tor-network.out" >&2; exit 1; }
ssh -F "$SSHCFG" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null web \
    "for _ in \$(seq 900); do [ \$(journalctl -u clan-tor-onion -o cat | grep -c 'Uploaded hidden service descriptor (status 200') -ge 5 ] && exit 0; sleep 0.2; done; exit 1" \
    || { echo "the onion service did not publish its descriptor" >&2; exit 1; }
ONION=$("$CLAN" vars get web tor_onion/hostname)
printf 'table inet notor {\n  chain input {\n    type filter hook input priority -10;\n    ip saddr %s tcp dport 22 drop\n  }\n}\n' "$ADMIN" \
    | ip netns exec "$WEB_NS" nft -f -

TORDIR=$XDG_CACHE_HOME/clan/tor
cold=() warm=() handshake=()
for _ in $(seq "$RUNS"); do
    rm -rf "$TORDIR"
    t0=$(now); out=$("$CLAN" ssh web -- true 2>&1); cold+=("$(echo "$(now) - $t0" | bc)")
    grep -q "(network onion)" <<< "$out" || { echo "$out" >&2; exit 1; }
    handshake+=("$(sed -n 's/.* in \([0-9]*\) ms$/\1/p' <<< "$out" | head -1)")
    t0=$(now); "$CLAN" ssh web -- true >/dev/null 2>&1; warm+=("$(echo "$(now) - $t0" | bc)")
done
record "clan ssh over tor, cold client (median)" "$(printf '%s\n' "${cold[@]}" | median)"
record "  its reported handshake, cold (median)" "$(printf '%s\n' "${handshake[@]}" | median | awk '{print $1/1000}')"
record "clan ssh over tor, warm data dir (median)" "$(printf '%s\n' "${warm[@]}" | median)"

# Baseline: a Tor client already bootstrapped; plain ssh through it.
mkdir -m 700 "$BENCH_DIR/baseline"
printf 'DataDirectory %s/baseline/data\nSocksPort 127.0.0.1:19150\nClientOnly 1\nLog notice stdout\n%%include %s\n' \
    "$BENCH_DIR" "$CLAN_TOR_CONFIG" > "$BENCH_DIR/baseline/torrc"
tor -f "$BENCH_DIR/baseline/torrc" > "$BENCH_DIR/baseline/out.log" 2>&1 &
BASE_PID=$!
for _ in $(seq 900); do grep -q 'Bootstrapped 100%' "$BENCH_DIR/baseline/out.log" && break; sleep 0.2; done
base=()
for _ in $(seq "$RUNS"); do
    t0=$(now)
    ssh -F "$SSHCFG" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o ProxyCommand="$CLAN network socks-connect --proxy 127.0.0.1:19150 --host %h --port %p" "root@$ONION" true
    base+=("$(echo "$(now) - $t0" | bc)")
done
kill "$BASE_PID" 2>/dev/null || true
record "plain ssh through a running tor (median)" "$(printf '%s\n' "${base[@]}" | median)"
echo "cold runs: ${cold[*]}" | tee -a "$RESULTS" >&2
