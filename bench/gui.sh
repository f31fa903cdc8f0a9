#!/bin/sh
# The GUI's speed in headless Chromium on a 1,000-machine clan (first paint of the fleet map,
# a filter, opening a machine, a settings edit's round trip) and, as root with the testbed
# tools, deploy events from the server's sink to the page. Needs chromium and
# chromium-driver (Debian). Usage: bench/gui.sh [MACHINES] [--release]
set -eu
cd "$(dirname "$0")/.."
machines=${1:-1000}
profile=dev
[ "${2:-}" = "--release" ] && profile=bench
# The agent a deploy uploads must exist beside the bench binary's directory.
cargo build --quiet --profile "$profile" -p clan --bin clan-agent
exec cargo bench --quiet --profile "$profile" -p clan-gui --bench gui -- "$machines"
