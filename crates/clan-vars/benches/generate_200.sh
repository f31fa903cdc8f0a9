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
trap 'rm -rf "$work"' EXIT

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
mkdir -p "$work/floor"
for i in $(seq -w 1 "$machines"); do
  for g in ssh password; do
    script="$work/floor/m$i-$g.sh"
    body=$([ $g = ssh ] && echo "$keygen" || echo "$password")
    printf 'out=%s; mkdir -p "$out"\n%s\n' "$work/floor/out/m$i/$g" "$body" > "$script"
  done
done
printf 'out=%s; mkdir -p "$out"\n%s\n' "$work/floor/out/shared/token" "$shared" > "$work/floor/shared-token.sh"

cp -a "$work/clan" "$work/clan-nosandbox"
now() { date +%s.%N; }
start=$(now)
ls "$work"/floor/*.sh | xargs -P2 -n1 bash
floor=$(echo "$(now) - $start" | bc)

start=$(now)
echo "{}" | "$clan" vars generate --prompt-values - 2> "$work/clan.log" || { tail -20 "$work/clan.log"; exit 1; }
ours=$(echo "$(now) - $start" | bc)

cd "$work/clan-nosandbox"
start=$(now)
echo "{}" | "$clan" vars generate --no-sandbox --prompt-values - 2> "$work/clan.log" || { tail -20 "$work/clan.log"; exit 1; }
nosandbox=$(echo "$(now) - $start" | bc)

count=$(find vars -name secret | wc -l)
printf 'machines=%s generator runs=%s secrets=%s\n' "$machines" "$(ls "$work"/floor/*.sh | wc -l)" "$count"
printf 'floor (xargs -P2 bash, no sandbox, no encryption): %.2f s\n' "$floor"
printf 'clan vars generate (bwrap, sops, machine keys, commit): %.2f s\n' "$ours"
printf 'clan vars generate --no-sandbox: %.2f s\n' "$nosandbox"
printf 'ratio: %.2f (--no-sandbox: %.2f)\n' "$(echo "$ours / $floor" | bc -l)" "$(echo "$nosandbox / $floor" | bc -l)"
uptime
