#!/usr/bin/env bash
# Networking benchmark (issue 13): reaching a machine by racing its routes.
#
# One testbed machine `web` answers at two addresses: its testbed address A (its
# deploy.targetHost, the top route) and a second address B on the same interface (the `lan`
# network of the `internet` service, a lower route). Measured, wall clock, median of RUNS:
#   1. A black-holed (an nftables drop rule in the machine's namespace: packets dropped, not
#      refused): `clan ssh web -- true`, against a sequential probe in the same run — clan-core's
#      way: each route in priority order with its 20 s timeout (`ssh -o ConnectTimeout=20`),
#      the next only after the previous gave up (run once: it costs the timeout).
#   2. A reachable: `clan ssh web -- true` against a plain `ssh root@A true` with the same
#      ssh_config; the handshake time clan reports for the winning route is recorded too.
#
# Usage (as root, from the repo):  bench/network.sh
# Env: CLAN_BIN (default target/release/clan), BENCH_DIR (default /tmp/netbench), RUNS
#      (default 7), KEEP=1 keeps the testbed running.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CLAN=${CLAN_BIN:-$REPO/target/release/clan}
BENCH_DIR=${BENCH_DIR:-/tmp/netbench}
RUNS=${RUNS:-7}
STATE=$BENCH_DIR/testbed
CLANDIR=$BENCH_DIR/clan
RESULTS=$BENCH_DIR/results.txt

[ "$(id -u)" = 0 ] || { echo "run as root (the testbed needs it)" >&2; exit 1; }
mkdir -p "$BENCH_DIR"
: > "$RESULTS"
log() { echo "== $*" >&2; }
now() { date +%s.%N; }
record() { printf '%-40s %8.3f s\n' "$1" "$2" | tee -a "$RESULTS" >&2; }
# median CMD...: runs CMD $RUNS times, prints the median wall clock in seconds.
median() {
    local times=() t0
    for _ in $(seq "$RUNS"); do
        t0=$(now); "$@" >/dev/null 2>&1 || true; times+=("$(echo "$(now) - $t0" | bc)")
    done
    printf '%s\n' "${times[@]}" | sort -g | sed -n "$(( (RUNS + 1) / 2 ))p"
}

"$CLAN" testbed down --state-dir "$STATE" >/dev/null 2>&1 || true
teardown() { [ "${KEEP:-0}" = 1 ] || "$CLAN" testbed down --state-dir "$STATE" || true; }
trap teardown EXIT
log "starting the test machine"
"$CLAN" testbed up --state-dir "$STATE" --json --trust-host-keys web > "$BENCH_DIR/testbed.json"
field() { python3 -c 'import json,sys; print(eval("json.load(open(sys.argv[1]))" + sys.argv[2]))' "$BENCH_DIR/testbed.json" "$1"; }
A=$(field '["machines"][0]["address"]')
B=${A%.*}.$(( ${A##*.} + 100 ))
NETNS=$(ip netns list | awk '{print $1}' | grep -E "^clantb[0-9]+-m0$" | while read -r ns; do
    ip -n "$ns" -4 addr show dev eth0 | grep -q " $A/" && echo "$ns"; done | head -1)
ip -n "$NETNS" addr add "$B/24" dev eth0
SSHCFG=$BENCH_DIR/ssh_config
sed "/^Host /s/ $A\$/ $A $B/" "$(field '["ssh_config"]')" > "$SSHCFG"
grep -q " $A $B\$" "$SSHCFG" || { echo "ssh_config: no Host line for $A" >&2; exit 1; }
# The machine's host key under its second address too (strict checking on both routes).
KNOWN=$(dirname "$(field '["ssh_config"]')")/known_hosts
sed -n "s/^[^ ]*,$A /$B /p" "$KNOWN" >> "$KNOWN"

rm -rf "$CLANDIR"; mkdir -p "$CLANDIR"
cat > "$CLANDIR/clan.toml" <<TOML
[meta]
name = "netbench"
domain = "invalid"

[machines.web]
deploy.targetHost = "root@$A"

[instances.lan]
module.name = "internet"
roles.default.machines.web.settings = { host = "$B" }
TOML
export CLAN_DIR=$CLANDIR CLAN_SSH_CONFIG=$SSHCFG CLAN_HOST_KEY_CHECK=strict CLAN_NO_COMMIT=1
"$CLAN" ssh web -- true   # evaluates once (the cache), and proves both work
ssh -F "$SSHCFG" "root@$B" true

log "reachable: clan ssh vs plain ssh ($RUNS runs each, median)"
record "plain ssh root@A true" "$(median ssh -F "$SSHCFG" "root@$A" true)"
record "clan ssh web -- true (A live)" "$(median "$CLAN" ssh web -- true)"
ms=$("$CLAN" ssh web -- true 2>&1 | sed -n 's/.* in \([0-9]*\) ms$/\1/p')
record "  of which the winning handshake" "$(echo "$ms / 1000" | bc -l)"

log "black-holing A"
ip netns exec "$NETNS" nft -f - <<NFT
table inet netbench {
  chain input {
    type filter hook input priority -10;
    ip daddr $A drop
  }
}
NFT
record "clan ssh web -- true (A black-holed)" "$(median "$CLAN" ssh web -- true)"
ms=$("$CLAN" ssh web -- true 2>&1 | sed -n 's/.* in \([0-9]*\) ms$/\1/p')
record "  of which the race (to B's handshake)" "$(echo "$ms / 1000" | bc -l)"
t0=$(now)
ssh -F "$SSHCFG" -o ConnectTimeout=20 "root@$A" true 2>/dev/null || ssh -F "$SSHCFG" -o ConnectTimeout=20 "root@$B" true
record "sequential probe, 20 s timeouts (once)" "$(echo "$(now) - $t0" | bc)"
log "results in $RESULTS"
