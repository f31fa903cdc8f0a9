#!/usr/bin/env bash
# Deploy benchmark (issue 4): clan vs Ansible vs pyinfra on N testbed machines.
#
# Each machine gets 20 files, 2 systemd units (enabled and started) and 1 user from every
# tool, under per-tool names (/etc/bench-<tool>/, bench-<tool>-{a,b}.service, user
# bench<tool>) so that every tool's first deploy really is a first deploy.
# Measured, wall clock, for each tool: first deploy, re-deploy with nothing changed; for clan
# also a re-deploy with one file changed on one machine (checked by --json events and mtimes).
#
# Usage (as root, from the repo):  bench/deploy.sh [N]        (default N=50)
# Env: CLAN_BIN (default target/release/clan; a stripped copy is what runs, and a stripped copy
#      of the clan-agent beside it is what is uploaded),
#      BENCH_DIR (default /tmp/deploybench), VENV (default /tmp/deploybench-venv),
#      JOBS (default 50: clan --jobs and ansible -f; pyinfra always connects to all at once),
#      TOOLS (default "clan ansible pyinfra": which tools run), KEEP=1 keeps the testbed running,
#      SHAPE (e.g. 50mbit: the admin's uplink to every machine shaped with tc tbf).
# Each run also records the bytes the admin sent to the machines (its testbed interface's
# tx_bytes before and after).
set -euo pipefail

N=${1:-50}
REPO=$(cd "$(dirname "$0")/.." && pwd)
CLAN_BIN=${CLAN_BIN:-$REPO/target/release/clan}
BENCH_DIR=${BENCH_DIR:-/tmp/deploybench}
VENV=${VENV:-/tmp/deploybench-venv}
JOBS=${JOBS:-50}
TOOLS=${TOOLS:-clan ansible pyinfra}
STATE=$BENCH_DIR/testbed
CLANDIR=$BENCH_DIR/clan
RESULTS=$BENCH_DIR/results.txt
# The testbed's Debian rootfs plus python3, which Ansible needs on the machines (clan and
# pyinfra do not). A copy, so the shared cache in /var/cache/clan-testbed is left alone.
export CLAN_TESTBED_CACHE=${CLAN_TESTBED_CACHE:-$BENCH_DIR-cache}

[ "$(id -u)" = 0 ] || { echo "run as root (the testbed needs it)" >&2; exit 1; }
mkdir -p "$BENCH_DIR"
: > "$RESULTS"
log() { echo "== $*" >&2; }
now() { date +%s.%N; }
record() { printf '%-12s %-22s %8.2f s\n' "$1" "$2" "$3" | tee -a "$RESULTS" >&2; }

# --- tools -----------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/ansible-playbook" ] || [ ! -x "$VENV/bin/pyinfra" ]; then
    log "installing ansible-core and pyinfra into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q ansible-core pyinfra
fi
# The deployer uploads the clan-agent beside it.
cp "$CLAN_BIN" "$BENCH_DIR/clan-bin"
cp "$(dirname "$CLAN_BIN")/clan-agent" "$BENCH_DIR/clan-agent"
strip "$BENCH_DIR/clan-bin" "$BENCH_DIR/clan-agent"
CLAN=$BENCH_DIR/clan-bin
log "clan agent binary: $(stat -c %s "$BENCH_DIR/clan-agent") bytes stripped (uploaded, gzip'd: $(gzip -6c "$BENCH_DIR/clan-agent" | wc -c))"

# --- rootfs with python3 ---------------------------------------------------------------------
SRC=/var/cache/clan-testbed
if ! ls -d "$CLAN_TESTBED_CACHE"/debian-* >/dev/null 2>&1; then
    ls -d "$SRC"/debian-* >/dev/null 2>&1 || {
        log "building the testbed rootfs once"; "$CLAN" testbed up -n 1 --state-dir "$BENCH_DIR/warm" \
            && CLAN_TESTBED_CACHE=$SRC "$CLAN" testbed down --state-dir "$BENCH_DIR/warm"; }
    log "copying the rootfs to $CLAN_TESTBED_CACHE and adding python3"
    mkdir -p "$CLAN_TESTBED_CACHE"; touch "$CLAN_TESTBED_CACHE/.lock"
    cp -a "$SRC"/debian-* "$CLAN_TESTBED_CACHE/"
    R=$(ls -d "$CLAN_TESTBED_CACHE"/debian-* | head -1)
    cp "$R/etc/resolv.conf" "$BENCH_DIR/resolv.orig"; cp /etc/resolv.conf "$R/etc/resolv.conf"
    chroot "$R" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/*'
    cp "$BENCH_DIR/resolv.orig" "$R/etc/resolv.conf"
fi

# --- testbed ---------------------------------------------------------------------------------
"$CLAN" testbed down --state-dir "$STATE" >/dev/null 2>&1 || true
teardown() { [ "${KEEP:-0}" = 1 ] || "$CLAN" testbed down --state-dir "$STATE" || true; }
trap teardown EXIT
log "starting $N test machines"
t0=$(now)
"$CLAN" testbed up -n "$N" --state-dir "$STATE" --json --trust-host-keys > "$BENCH_DIR/testbed.json"
record testbed "up -n $N" "$(echo "$(now) - $t0" | bc)"
SSHCFG=$STATE/ssh_config
[ -f "$SSHCFG" ] || SSHCFG=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ssh_config"])' "$BENCH_DIR/testbed.json")
KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin_key"])' "$BENCH_DIR/testbed.json")
KNOWN=$(dirname "$SSHCFG")/known_hosts
HOSTIF=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["host_interface"])' "$BENCH_DIR/testbed.json")
if [ -n "${SHAPE:-}" ]; then
    log "shaping the admin's uplink ($HOSTIF) to $SHAPE"
    tc qdisc replace dev "$HOSTIF" root tbf rate "$SHAPE" burst 256kb latency 50ms
    record shape "$SHAPE on $HOSTIF" 0
fi
tx_bytes() { cat "/sys/class/net/$HOSTIF/statistics/tx_bytes"; }
mapfile -t NAMES < <(python3 -c 'import json,sys; [print(m["name"]) for m in json.load(open(sys.argv[1]))["machines"]]' "$BENCH_DIR/testbed.json")
mapfile -t ADDRS < <(python3 -c 'import json,sys; [print(m["address"]) for m in json.load(open(sys.argv[1]))["machines"]]' "$BENCH_DIR/testbed.json")
CHANGED=${NAMES[$(( ${#NAMES[@]} / 2 ))]}   # the machine whose file changes

# on_all CMD: runs CMD on every machine (8 at a time), output prefixed with the machine name.
on_all() {
    printf '%s\n' "${NAMES[@]}" | xargs -P 8 -I{} sh -c \
        'ssh -F "$0" {} "$1" 2>&1 | sed "s/^/{} /"' "$SSHCFG" "$1"
}

# --- the three deploys -----------------------------------------------------------------------
UNIT_A='[Unit]\nDescription=bench a\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n'
UNIT_B='[Unit]\nDescription=bench b\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n'

# clan: a clan-local Starlark service.
rm -rf "$CLANDIR"; mkdir -p "$CLANDIR/services/bench"
cat > "$CLANDIR/services/bench/service.star" <<STAR
manifest = {"name": "bench", "description": "deploy benchmark: 20 files, 5 secrets, 2 units, 1 user"}

def _bench(ctx):
    name = ctx.machine["name"]
    rev = ctx.settings["revision"]
    files = {}
    for i in range(1, 21):
        content = "# bench file %d of %s\nkey%d = value-%d\n" % (i, name, i, i)
        if i == 1:
            content += "revision = %d\n" % rev
        num = ("0" if i < 10 else "") + str(i)  # no %02d in starlark-rust
        files["/etc/bench-clan/file-%s.conf" % num] = {"content": content}
    generators = {}
    for i in range(1, 6):
        generators["bench-secret-%d" % i] = {
            "files": {"secret": {}},
            "runtimeInputs": ["head", "base64"],
            "script": "head -c 32 /dev/urandom | base64 > \$out/secret",
        }
    return {"config": {
        "files": files,
        "generators": generators,
        "units": {
            "bench-clan-a.service": {"content": "$UNIT_A"},
            "bench-clan-b.service": {"content": "$UNIT_B"},
        },
        "users": {"benchclan": {"home": "/home/benchclan", "shell": "/bin/sh"}},
    }}

roles = {
    "default": {
        "interface": {"type": "object", "additionalProperties": False, "properties": {
            "revision": {"type": "integer", "default": 1, "description": "goes into file-01"},
        }},
        "perInstance": _bench,
    },
}
STAR
write_clan_toml() {  # $1: revision of $CHANGED's file-01
    {
        printf '[meta]\nname = "bench"\ndomain = "invalid"\n\n'
        for i in "${!NAMES[@]}"; do
            printf '[machines.%s]\ndeploy.targetHost = "root@%s"\n\n' "${NAMES[$i]}" "${ADDRS[$i]}"
        done
        printf '[instances.bench]\nmodule.name = "bench"\nroles.default.tags = ["all"]\n'
        printf 'roles.default.machines.%s.settings = { revision = %s }\n' "$CHANGED" "$1"
    } > "$CLANDIR/clan.toml"
}
write_clan_toml 1
export SOPS_AGE_KEY_FILE=$BENCH_DIR/admin.age
rm -f "$SOPS_AGE_KEY_FILE"
CLAN_DIR=$CLANDIR "$CLAN" vars keygen --user bench >/dev/null
t0=$(now)
echo '{}' | CLAN_DIR=$CLANDIR XDG_CACHE_HOME=$BENCH_DIR/cache "$CLAN" vars generate --prompt-values - >/dev/null
record clan "vars generate (5x$N)" "$(echo "$(now) - $t0" | bc)"
clan_update() {  # $1: JSON event log
    CLAN_DIR=$CLANDIR CLAN_SSH_CONFIG=$SSHCFG XDG_CACHE_HOME=$BENCH_DIR/cache \
        "$CLAN" machines update --json --jobs "$JOBS" > "$1"
}

# Ansible: inventory of the same names, OpenSSH with the testbed's ssh_config.
mkdir -p "$BENCH_DIR/ansible"
{
    echo "[bench]"; printf '%s\n' "${NAMES[@]}"
    echo "[bench:vars]"
    echo "ansible_ssh_common_args='-F $SSHCFG'"
    echo "ansible_python_interpreter=/usr/bin/python3"
} > "$BENCH_DIR/ansible/inventory.ini"
cat > "$BENCH_DIR/ansible/site.yml" <<YAML
- hosts: bench
  gather_facts: false
  tasks:
    - name: directory
      ansible.builtin.file: {path: /etc/bench-ansible, state: directory, mode: "0755"}
    - name: files
      ansible.builtin.copy:
        dest: "/etc/bench-ansible/file-{{ '%02d' % item }}.conf"
        content: "# bench file {{ item }} of {{ inventory_hostname }}\nkey{{ item }} = value-{{ item }}\n{{ 'revision = 1\n' if item == 1 else '' }}"
        mode: "0644"
      loop: "{{ range(1, 21) | list }}"
    - name: units
      ansible.builtin.copy:
        dest: "/etc/systemd/system/bench-ansible-{{ item.n }}.service"
        content: "{{ item.c }}"
        mode: "0644"
      loop:
        - {n: a, c: "$UNIT_A"}
        - {n: b, c: "$UNIT_B"}
      register: units
    - name: start units
      ansible.builtin.systemd_service:
        name: "bench-ansible-{{ item }}.service"
        enabled: true
        state: started
        daemon_reload: "{{ units.changed }}"
      loop: [a, b]
    - name: user
      ansible.builtin.user: {name: benchansible, home: /home/benchansible, shell: /bin/sh}
YAML
ansible_run() {
    ANSIBLE_HOST_KEY_CHECKING=True ANSIBLE_STDOUT_CALLBACK=default ANSIBLE_RETRY_FILES_ENABLED=False \
        "$VENV/bin/ansible-playbook" -i "$BENCH_DIR/ansible/inventory.ini" -f "$JOBS" \
        "$BENCH_DIR/ansible/site.yml" > "$1" 2>&1
}

# pyinfra: the same machines, the testbed's key and known_hosts, defaults otherwise.
mkdir -p "$BENCH_DIR/pyinfra"
{
    echo "hosts = ["
    for i in "${!NAMES[@]}"; do echo "    ('${NAMES[$i]}', {'ssh_hostname': '${ADDRS[$i]}'}),"; done
    echo "]"
} > "$BENCH_DIR/pyinfra/inventory.py"
cat > "$BENCH_DIR/pyinfra/deploy.py" <<PY
from io import StringIO
from pyinfra import host
from pyinfra.operations import files, server, systemd

name = host.name
files.directory(name="directory", path="/etc/bench-pyinfra", mode="755")
for i in range(1, 21):
    content = "# bench file %d of %s\nkey%d = value-%d\n" % (i, name, i, i)
    if i == 1:
        content += "revision = 1\n"
    files.put(name="file %02d" % i, src=StringIO(content), dest="/etc/bench-pyinfra/file-%02d.conf" % i, mode="644")
for unit, text in (("a", "$UNIT_A"), ("b", "$UNIT_B")):
    files.put(name="unit " + unit, src=StringIO(text), dest="/etc/systemd/system/bench-pyinfra-%s.service" % unit, mode="644")
for unit in ("a", "b"):
    systemd.service(name="start " + unit, service="bench-pyinfra-%s.service" % unit, running=True, enabled=True, daemon_reload=True)
server.user(name="user", user="benchpyinfra", home="/home/benchpyinfra", shell="/bin/sh")
PY
pyinfra_run() {
    (cd "$BENCH_DIR/pyinfra" && "$VENV/bin/pyinfra" -y \
        --user root --key "$KEY" \
        --data ssh_known_hosts_file="$KNOWN" --data ssh_strict_host_key_checking=yes \
        inventory.py deploy.py) > "$1" 2>&1
}

# --- run -------------------------------------------------------------------------------------
timed() {  # tool label logfile command...
    local tool=$1 label=$2 out=$3; shift 3
    case " $TOOLS " in *" $tool "*) ;; *) return 0 ;; esac
    local t0 rc=0 b0; b0=$(tx_bytes); t0=$(now)
    "$@" "$out" || rc=$?
    local dt; dt=$(echo "$(now) - $t0" | bc)
    local sent; sent=$(( $(tx_bytes) - b0 ))
    [ "$rc" = 0 ] || { log "$tool $label FAILED (exit $rc), see $out"; tail -20 "$out" >&2; }
    record "$tool" "$label" "$dt"
    printf '%-12s %-22s %8.1f MiB sent by the admin\n' "$tool" "$label" "$(echo "$sent / 1048576" | bc -l)" | tee -a "$RESULTS" >&2
}
timed clan first "$BENCH_DIR/clan-first.jsonl" clan_update
timed clan unchanged "$BENCH_DIR/clan-unchanged.jsonl" clan_update
timed ansible first "$BENCH_DIR/ansible-first.log" ansible_run
timed ansible unchanged "$BENCH_DIR/ansible-unchanged.log" ansible_run
timed pyinfra first "$BENCH_DIR/pyinfra-first.log" pyinfra_run
timed pyinfra unchanged "$BENCH_DIR/pyinfra-unchanged.log" pyinfra_run

# clan, one file changed on one machine.
on_all 'stat -c "%n %Y.%y" /etc/bench-clan/* /etc/systemd/system/bench-clan-*.service' | sort > "$BENCH_DIR/mtimes-before.txt"
sleep 1.1
write_clan_toml 2
timed clan "one file changed" "$BENCH_DIR/clan-onechange.jsonl" clan_update
on_all 'stat -c "%n %Y.%y" /etc/bench-clan/* /etc/systemd/system/bench-clan-*.service' | sort > "$BENCH_DIR/mtimes-after.txt"
log "mtime differences (expected: only $CHANGED /etc/bench-clan/file-01.conf):"
diff "$BENCH_DIR/mtimes-before.txt" "$BENCH_DIR/mtimes-after.txt" | grep '^>' | tee -a "$RESULTS" >&2 || true
log "clan events for the one-file change, other than resolve/done with outcome unchanged:"
python3 - "$BENCH_DIR/clan-onechange.jsonl" <<'PY' | tee -a "$RESULTS" >&2
import json, sys, collections
outcomes = collections.Counter()
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e["event"] == "done":
        outcomes[e["outcome"]] += 1
        if e["outcome"] == "unchanged":
            continue
    if e["event"] == "resolve":
        continue
    print(json.dumps(e))
print("done outcomes:", dict(outcomes))
PY

# Checks that everything arrived.
log "checks"
on_all 'echo "clan secrets in /run/clan/secrets: $(ls /run/clan/secrets/bench-secret-*/secret 2>/dev/null | wc -l)"' \
    | awk '{$1=""; print}' | sort | uniq -c | tee -a "$RESULTS" >&2
on_all 'for t in clan ansible pyinfra; do n=$(ls /etc/bench-$t | wc -l); a=$(systemctl is-active bench-$t-a bench-$t-b | tr "\n" ,); u=$(id -u bench$t >/dev/null 2>&1 && echo user || echo NOUSER); echo "$t files=$n units=$a $u"; done' \
    | awk '{print $2, $3, $4, $5}' | sort | uniq -c | tee -a "$RESULTS" >&2
cat "$RESULTS"
