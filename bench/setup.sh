#!/usr/bin/env bash
# Set-up of the benchmarks: the peers (task-spooler, nq: Debian packages), tmux, and the package
# with its `bench` extra (matplotlib, for the plot). `python -m bench` also installs the peers
# itself when they are missing and it runs as root (pass --no-install to forbid that).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v tmux >/dev/null || need+=(tmux)
{ command -v tsp >/dev/null || command -v ts >/dev/null; } || need+=(task-spooler)
command -v nq >/dev/null || need+=(nq)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing: ${need[*]}; install them with: sudo apt-get install -y ${need[*]}" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" \
        || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"; }
fi
python3 -m pip install --quiet -e '.[bench]'
echo "ready: python -m bench quick   (or: python -m bench full)"
