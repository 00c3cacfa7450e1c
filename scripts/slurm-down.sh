#!/usr/bin/env bash
# Stop the one-node SLURM started by scripts/slurm-up.sh: each daemon by its pid file, never by name.
set -uo pipefail

stop() {  # stop PIDFILE: TERM the process it names and wait up to 10 s for it to exit
    local pidfile="$1" pid
    [ -s "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -0 "$pid" 2>/dev/null && echo "still running after 10 s: pid $pid ($pidfile)" >&2
    fi
    rm -f "$pidfile"
}

stop /run/slurmd.pid
stop /run/slurmctld.pid
stop /run/munge/munged.pid
echo "SLURM down"
