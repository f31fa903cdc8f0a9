#!/usr/bin/env bash
# Backup benchmark (issue 14): `clan backups create` against running borg and restic directly
# with the same options on the same data, in one run; then `clan backups status` over N
# machines.
#
# Two testbed machines first: a server `backup01` and a client `web01` holding a 1 GiB state
# tree (1024 files of 1 MiB, random, so compression cannot shortcut it). For each tool:
#   direct: a fresh repository, `init` + first backup (+ prune + compact for borg, forget
#           --prune for restic), then 1 % of the files rewritten and a second backup;
#   clan:   the repository wiped, the same two backups through `clan backups create`.
# The direct commands run on web01 (over the testbed's own ssh, one `ssh` each) with the
# provider's environment; clan's time includes evaluation, SSH and the agent.
# Then N client machines (default 50) all with a provider; `clan backups status` timed.
#
# Usage (as root, from the repo):  bench/backups.sh [N]
# Env: CLAN_BIN (default target/release/clan; `clan-agent` beside it), BENCH_DIR (default
#      /tmp/backupbench), KEEP=1 keeps the testbed running.
set -euo pipefail

N=${1:-50}
REPO=$(cd "$(dirname "$0")/.." && pwd)
CLAN_BIN=${CLAN_BIN:-$REPO/target/release/clan}
BENCH_DIR=${BENCH_DIR:-/tmp/backupbench}
STATE=$BENCH_DIR/testbed
CLANDIR=$BENCH_DIR/clan
RESULTS=$BENCH_DIR/results.txt

[ "$(id -u)" = 0 ] || { echo "run as root (the testbed needs it)" >&2; exit 1; }
mkdir -p "$BENCH_DIR"
: > "$RESULTS"
log() { echo "== $*" >&2; }
now() { date +%s.%N; }
record() { printf '%-8s %-40s %8.2f s\n' "$1" "$2" "$3" | tee -a "$RESULTS" >&2; }
timed() {  # timed TOOL WHAT COMMAND...
    local tool=$1 what=$2 t0; shift 2
    t0=$(now); "$@" >/dev/null; record "$tool" "$what" "$(echo "$(now) - $t0" | bc)"
}

mkdir -p "$BENCH_DIR/bin"
cp "$CLAN_BIN" "$BENCH_DIR/bin/clan"
cp "$(dirname "$CLAN_BIN")/clan-agent" "$BENCH_DIR/bin/clan-agent"
strip "$BENCH_DIR/bin/clan" "$BENCH_DIR/bin/clan-agent"
CLAN=$BENCH_DIR/bin/clan

teardown() { [ "${KEEP:-0}" = 1 ] || "$CLAN" testbed down --state-dir "$STATE" >/dev/null 2>&1 || true; }
trap teardown EXIT
"$CLAN" testbed down --state-dir "$STATE" >/dev/null 2>&1 || true

# clan_for MACHINES...: a clan with backup01 as server and the others as clients of both
# providers, the `bench` state on every client, deployed.
clan_for() {
    rm -rf "$CLANDIR"; mkdir -p "$CLANDIR/services/bench"
    cat > "$CLANDIR/services/bench/service.star" <<'STAR'
manifest = {"name": "bench", "description": "backup benchmark state"}
def _bench(ctx):
    return {"config": {"state": {"bench": {"folders": ["/var/lib/bench"]}}}}
roles = {"default": {"interface": {"type": "object"}, "perInstance": _bench}}
STAR
    python3 - "$STATE/testbed.json" "$CLANDIR/clan.toml" <<'PY'
import json, sys
testbed = json.load(open(sys.argv[1]))
lines = ['[meta]\nname = "bench"\ndomain = "invalid"\n']
for m in testbed["machines"]:
    lines.append('[machines.%s]\ndeploy.targetHost = "root@%s"\n' % (m["name"], m["address"]))
clients = [m["name"] for m in testbed["machines"] if m["name"] != "backup01"]
lines.append('[instances.bench]\nmodule.name = "bench"\n' + "".join(
    'roles.default.machines.%s = {}\n' % c for c in clients))
for provider in ["borgbackup", "restic"]:
    lines.append('[instances.%s]\nmodule.name = "%s"\nroles.server.machines.backup01 = {}\n' % (provider, provider)
                 + "".join('roles.client.machines.%s = {}\n' % c for c in clients))
open(sys.argv[2], "w").write("\n".join(lines))
PY
    git -C "$CLANDIR" init -q && git -C "$CLANDIR" add -A && git -C "$CLANDIR" -c user.name=b -c user.email=b@b commit -qm bench
    export SOPS_AGE_KEY_FILE=$BENCH_DIR/admin.age
    rm -f "$SOPS_AGE_KEY_FILE"
    CLAN_DIR=$CLANDIR "$CLAN" vars keygen --user bench >/dev/null
    CLAN_DIR=$CLANDIR XDG_CACHE_HOME=$BENCH_DIR/cache "$CLAN" machines update --jobs 50 \
        --host-key-check tofu -q
}
clan() { CLAN_DIR=$CLANDIR CLAN_SSH_CONFIG=$STATE/ssh_config XDG_CACHE_HOME=$BENCH_DIR/cache "$CLAN" "$@"; }
on() { ssh -F "$STATE/ssh_config" "$1" "$2"; }

# --- 1 GiB: clan vs the tools ------------------------------------------------------------------
log "starting backup01 and web01"
"$CLAN" testbed up backup01 web01 --state-dir "$STATE" --package borgbackup --package restic \
    --json > "$STATE.json"
cp "$STATE.json" "$STATE/testbed.json"
clan_for
log "writing a 1 GiB state tree on web01"
on web01 'mkdir -p /var/lib/bench && cd /var/lib/bench && for i in $(seq 1 1024); do head -c 1M /dev/urandom > f$i; done'
change_one_percent() { on web01 "cd /var/lib/bench && for i in \$(seq $1 $(( $1 + 9 ))); do head -c 1M /dev/urandom > f\$i; done"; }

# The provider scripts' destination table (name, repo, ssh command) and environment, so the
# direct runs use exactly the repository and SSH command clan's provider does.
dests() { echo "eval \"\$(sed -n '/^DESTS=(/,/^)/p' /etc/clan/$1/create)\""; }
BORG_ENV="export BORG_PASSCOMMAND='cat /run/clan/secrets/borgbackup/borgbackup.repokey' BORG_BASE_DIR=/var/lib/clan/borgbackup BORG_RELOCATED_REPO_ACCESS_IS_OK=yes; $(dests borgbackup); repo=\${DESTS[1]}; export BORG_RSH=\${DESTS[2]}"
KEEP_OPTS='--keep-within 1d --keep-daily 7 --keep-weekly 4 --keep-monthly 0 --keep-yearly 0'
borg_wipe() { on backup01 'rm -rf /var/lib/borgbackup/web01'; on web01 'rm -rf /var/lib/clan/borgbackup/cache /var/lib/clan/borgbackup/security'; }
borg_direct() {
    on web01 "$BORG_ENV; set -e; $1 borg create --compression auto,zstd \"\$repo::web01-{now:%Y-%m-%dT%H:%M:%S}\" /var/lib/bench && borg prune $KEEP_OPTS \"\$repo\" && borg compact \"\$repo\""
}

borg_wipe
timed borg "direct: init + first backup (1 GiB)" borg_direct 'borg init --encryption repokey "$repo";'
change_one_percent 1
timed borg "direct: 1 % changed" borg_direct ""
borg_wipe
timed clan "borgbackup: first backup (1 GiB)" clan backups create web01 --provider borgbackup
change_one_percent 11
timed clan "borgbackup: 1 % changed" clan backups create web01 --provider borgbackup

RESTIC_ENV="export RESTIC_PASSWORD_FILE=/run/clan/secrets/restic/restic.password RESTIC_CACHE_DIR=/var/lib/clan/restic/cache; $(dests restic)"
restic_wipe() { on backup01 'rm -rf /var/lib/restic/web01'; on web01 'rm -rf /var/lib/clan/restic/cache'; }
restic_direct() {
    on web01 "$RESTIC_ENV; set -e; r() { restic -r \"\${DESTS[1]}\" -o \"sftp.command=\${DESTS[2]}\" \"\$@\"; }; $1 r backup --tag clan --host web01 /var/lib/bench && r forget --prune --host web01 $KEEP_OPTS"
}
restic_wipe
timed restic "direct: init + first backup (1 GiB)" restic_direct "r init;"
change_one_percent 21
timed restic "direct: 1 % changed" restic_direct ""
restic_wipe
timed clan "restic: first backup (1 GiB)" clan backups create web01 --provider restic
change_one_percent 31
timed clan "restic: 1 % changed" clan backups create web01 --provider restic
"$CLAN" testbed down --state-dir "$STATE" >/dev/null

# --- status over N machines ----------------------------------------------------------------------
NAMES=(backup01); for i in $(seq 1 "$N"); do NAMES+=("client-$i"); done
log "starting $((N + 1)) machines for the status run"
"$CLAN" testbed up "${NAMES[@]}" --state-dir "$STATE" --package borgbackup --package restic \
    --json > "$STATE.json"
cp "$STATE.json" "$STATE/testbed.json"
timed clan "deploy $N clients + server (vars first)" clan_for
timed clan "backups status ($N machines)" clan backups status --jobs 50
timed clan "backups status ($N machines, again)" clan backups status --jobs 50
cat "$RESULTS"
