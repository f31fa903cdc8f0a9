#!/usr/bin/env bash
# Micro VM benchmark (issue 15): one VM under this host's accelerator (TCG here), in one run:
#   floor: plain QEMU booting the same kernel, initramfs and root image by hand (a fresh qcow2
#          overlay, the same command line clan uses, no clan), timed launch -> sshd banner;
#   clan:  `clan vms run bench01 --no-deploy` (launch -> sshd, with its parts: kernel,
#          initramfs, systemd, sshd), then stopped and `clan vms run bench01` again with the
#          deploy (launch -> deploy confirmed, the agent uploaded, magic rollback confirmed);
#   three VMs booted at once (boot only), the cost of a 3-machine fleet before its deploys.
# The parts come from the console markers of clan's /init (guest uptime) and from systemd's
# own timestamps for ssh.service, read over SSH after the boot.
#
# Usage (as root, from the repo):  bench/vms.sh
# Env: CLAN_BIN (default target/release/clan, else target/debug/clan; `clan-agent` beside it),
#      BENCH_DIR (default /tmp/vmbench), ROUNDS (default 1).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CLAN_BIN=${CLAN_BIN:-$REPO/target/release/clan}
[ -x "$CLAN_BIN" ] || CLAN_BIN=$REPO/target/debug/clan
BENCH_DIR=${BENCH_DIR:-/tmp/vmbench}
ROUNDS=${ROUNDS:-1}
[ "$(id -u)" = 0 ] || { echo "run as root (the image is built from the testbed's tree)" >&2; exit 1; }

rm -rf "$BENCH_DIR"; mkdir -p "$BENCH_DIR/clan" "$BENCH_DIR/home"
export CLAN_VM_DIR=$BENCH_DIR/vms HOME=$BENCH_DIR/home CLAN_DIR=$BENCH_DIR/clan
cat > "$CLAN_DIR/clan.toml" <<'TOML'
[meta]
name = "bench"
domain = "invalid"

[machines.bench01]

[machines.bench02]

[machines.bench03]

[instances.hello]
module.name = "hello-world"
roles.default.tags = ["all"]
TOML
now() { date +%s.%N; }
banner() { # port: wait for an SSH banner
  until timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1; head -c 4 <&3" 2>/dev/null | grep -q SSH-; do sleep 0.1; done
}

for round in $(seq "$ROUNDS"); do
  echo "== round $round"
  # clan, boot only (builds the image once; the first round's numbers include nothing of it:
  # the build happens before QEMU's launch and is not in launch_to_sshd).
  start=$(now)
  out=$("$CLAN_BIN" vms run bench01 --no-deploy --json)
  echo "clan vms run --no-deploy, whole command (evaluation, initramfs, keys, boot): $(echo "$(now) - $start" | bc) s"
  echo "$out" | jq -c '{launch_to_sshd: .times.launchToSshdS, kernel: .times.kernelS, initramfs: .times.initramfsS, systemd_to_sshd: .times.systemdToSshdS, accel: .accel.mode}'
  port=$(echo "$out" | jq -r .sshPort); cfg=$(echo "$out" | jq -r .sshConfig); dir=$(echo "$out" | jq -r .dir)
  ssh -F "$cfg" -p "$port" -o BatchMode=yes 127.0.0.1 \
    'systemctl show ssh.service -P InactiveExitTimestampMonotonic -P ActiveEnterTimestampMonotonic' \
    | paste -sd' ' | awk '{printf "sshd unit: started at %.2f s, ready at %.2f s (guest uptime; %.2f s of sshd)\n", $1/1e6, $2/1e6, ($2-$1)/1e6}'
  # The floor gets clan's exact kernel command line (the same units masked).
  append=$(tr '\0' '\n' < "/proc/$(echo "$out" | jq -r .pid)/cmdline" | grep -A1 -x -- -append | tail -1)
  "$CLAN_BIN" vms stop bench01 >/dev/null 2>&1

  # floor: the same kernel, initramfs and image, QEMU by hand.
  kernel=$(ls /var/cache/clan-testbed/debian-bookworm-*/boot/vmlinuz-* | head -1)
  base=$(cat "$dir/disk.base")
  qemu-img create -q -f qcow2 -F raw -b "$base" "$BENCH_DIR/floor.qcow2"
  fport=$(( 20000 + RANDOM % 20000 ))
  start=$(now)
  qemu-system-x86_64 -M microvm,rtc=on -accel tcg -cpu max -smp 1 -m 512 -nodefaults -no-user-config \
    -display none -serial "file:$BENCH_DIR/floor.log" -kernel "$kernel" -initrd "$dir/initrd.img" \
    -append "$append" -no-reboot -global virtio-mmio.force-legacy=false \
    -drive "id=d,file=$BENCH_DIR/floor.qcow2,format=qcow2,if=none" -device virtio-blk-device,drive=d \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$fport-:22" -device virtio-net-device,netdev=n0 \
    -device virtio-rng-device &
  qpid=$!
  banner "$fport"
  echo "floor (plain QEMU by hand): launch to sshd $(echo "$(now) - $start" | bc) s"
  kill "$qpid"; wait "$qpid" 2>/dev/null || true
  rm -f "$BENCH_DIR/floor.qcow2"

  # clan with the deploy.
  start=$(now)
  "$CLAN_BIN" vms run bench01 --json > "$BENCH_DIR/run.json" 2>"$BENCH_DIR/run.err"
  end=$(now)
  echo "clan vms run (boot + deploy confirmed): $(echo "$end - $start" | bc) s; boot part $(jq .times.launchToSshdS "$BENCH_DIR/run.json") s; deployed: $(jq .deployed "$BENCH_DIR/run.json")"
  "$CLAN_BIN" vms stop bench01 >/dev/null 2>&1

  # Three VMs booting at once (what a 3-machine fleet costs before any deploy).
  start=$(now)
  for m in bench01 bench02 bench03; do "$CLAN_BIN" vms run $m --no-deploy > /dev/null 2>&1 & done
  wait
  echo "3 VMs at once, launch to all sshd answering: $(echo "$(now) - $start" | bc) s"
  for m in bench01 bench02 bench03; do "$CLAN_BIN" vms stop $m >/dev/null 2>&1 & done
  wait
done
