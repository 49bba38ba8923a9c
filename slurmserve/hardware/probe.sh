#!/usr/bin/env bash
# slurmserve hardware probe. Prints one section per source, each opened by a line
# '### slurmserve-probe: NAME'. A tool or /sys path that is missing leaves its section empty; exit 0.
set -u
export LC_ALL=C
section() { printf '### slurmserve-probe: %s\n' "$1"; }
# A wedged GPU can hang nvidia-smi: bound every tool when coreutils' timeout is there.
run() {
    command -v "$1" >/dev/null 2>&1 || return 0
    if command -v timeout >/dev/null 2>&1; then timeout 60 "$@" 2>/dev/null; else "$@" 2>/dev/null; fi
    return 0
}
section 'hostname'
hostname 2>/dev/null || uname -n 2>/dev/null || true
section 'nvidia-smi -L'
run nvidia-smi -L
section 'nvidia-smi topo -m'
run nvidia-smi topo -m
# 'PATH:VALUE' lines, the same as 'grep . /sys/class/infiniband/*/ports/*/{state,link_layer}' prints.
section 'infiniband ports'
for port in /sys/class/infiniband/*/ports/*; do
    [ -d "$port" ] || continue
    for attr in state link_layer rate; do
        [ -r "$port/$attr" ] && printf '%s:%s\n' "$port/$attr" "$(cat "$port/$attr" 2>/dev/null)"
    done
done
section 'ibv_devinfo'
run ibv_devinfo
section 'ibstat'
run ibstat
section 'ip -j addr'
run ip -j addr
exit 0
