#!/usr/bin/env bash
# `clan vars generate` for 200 machines x 3 generators (an ed25519 key pair, a random
# password, one shared secret), against the floor: the same scripts run by `xargs -P2 bash`
# without sandbox or encryption. Both from scratch, side by side, in one run.
#
#   crates/clan-vars/benches/generate_200.sh [path/to/clan] [machines]
set -euo pipefail
clan=${1:-target-vars/release/clan}
clan=$(realpath "$clan")
machines=${2:-200}
work=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

keygen='ssh-keygen -q -t ed25519 -N "" -C "" -f "$out"/ssh.id_ed25519'
password='head -c 18 /dev/urandom | base64 > "$out"/password'
shared='head -c 24 /dev/urandom | base64 > "$out"/token'

# --- the clan --------------------------------------------------------------------------
mkdir -p "$work/clan" "$work/home"
cd "$work/clan"
{
  echo '[meta]'
  echo 'name = "bench"'
  for i in $(seq -w 1 "$machines"); do echo "[machines.m$i]"; done
} > clan.toml
cat > generators.star <<STAR
STAR
for i in $(seq -w 1 "$machines"); do
  mkdir -p "machines/m$i"
  cat > "machines/m$i/config.star" <<STAR
def per_machine(ctx):
    return {"config": {"generators": {
        "ssh": {"files": {"ssh.id_ed25519": {}, "ssh.id_ed25519.pub": {"secret": False}},
                "runtimeInputs": ["ssh-keygen"], "script": '$keygen'},
        "password": {"files": {"password": {}}, "runtimeInputs": ["head", "base64"], "script": '$password'},
        "token": {"share": True, "files": {"token": {}}, "runtimeInputs": ["head", "base64"], "script": '$shared'},
    }}}
STAR
done
rm generators.star
export HOME="$work/home" SOPS_AGE_KEY_FILE="$work/admin.key" XDG_CACHE_HOME="$work/cache"
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.org GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.org
git init -q && git add -A && git commit -qm init
"$clan" vars keygen --user bench 2>/dev/null
"$clan" show >/dev/null # evaluate once, as any earlier command would have

# --- the floor: the same scripts, xargs -P2 bash, no sandbox, no encryption --------------
# Written for every round (each round writes into fresh directories).
rounds=${ROUNDS:-3}
for r in $(seq 1 "$rounds"); do
  mkdir -p "$work/floor$r"
  for i in $(seq -w 1 "$machines"); do
    for g in ssh password; do
      body=$([ $g = ssh ] && echo "$keygen" || echo "$password")
      printf 'out=%s; mkdir -p "$out"\n%s\n' "$work/floor$r/out/m$i/$g" "$body" > "$work/floor$r/m$i-$g.sh"
    done
  done
  printf 'out=%s; mkdir -p "$out"\n%s\n' "$work/floor$r/out/shared/token" "$shared" > "$work/floor$r/shared-token.sh"
  cp -a "$work/clan" "$work/clan$r"
  cp -a "$work/clan" "$work/clan-nosandbox$r"
done

# --- rounds: floor, ours, ours without sandbox; nothing is deleted until the end ------------
now() { date +%s.%N; }
# Each measurement starts from a synced file system, so none pays for the previous one's writes.
timed() { local start; sync; start=$(now); "$@"; echo "$(now) - $start" | bc; }
generate() {
  cd "$1" && echo "{}" | "$clan" vars generate "${@:2}" --prompt-values - >/dev/null 2> "$work/clan.log" \
    || { tail -20 "$work/clan.log" >&2; exit 1; }
}
floor_runs=() our_runs=() nosandbox_runs=()
for r in $(seq 1 "$rounds"); do
  floor_runs+=("$(timed sh -c "ls '$work/floor$r'/*.sh | xargs -P2 -n1 bash")")
  our_runs+=("$(timed generate "$work/clan$r")")
  nosandbox_runs+=("$(timed generate "$work/clan-nosandbox$r" --no-sandbox)")
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
floor=$(median "${floor_runs[@]}") ours=$(median "${our_runs[@]}") nosandbox=$(median "${nosandbox_runs[@]}")

count=$(find "$work/clan1/vars" -name secret | wc -l)
printf 'machines=%s generator runs=%s secrets=%s rounds=%s (median of each)\n' \
  "$machines" "$(ls "$work"/floor1/*.sh | wc -l)" "$count" "$rounds"
printf 'floor (xargs -P2 bash, no sandbox, no encryption): %.2f s  [%s]\n' "$floor" "${floor_runs[*]}"
printf 'clan vars generate (bwrap, sops, machine keys, commit): %.2f s  [%s]\n' "$ours" "${our_runs[*]}"
printf 'clan vars generate --no-sandbox: %.2f s  [%s]\n' "$nosandbox" "${nosandbox_runs[*]}"
printf 'ratio: %.2f (--no-sandbox: %.2f)\n' "$(echo "$ours / $floor" | bc -l)" "$(echo "$nosandbox / $floor" | bc -l)"
uptime; [ -z "${KEEP:-}" ] || echo "kept $work"
