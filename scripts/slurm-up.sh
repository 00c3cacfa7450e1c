#!/usr/bin/env bash
# Bring up a real one-node SLURM on this machine (as root), for CI and for trying the SLURM profile.
# Installs the Debian packages if missing, starts munge, slurmctld and slurmd by hand (containers
# have no init system), and waits until the node is idle. Safe to run again while it is up.
# Stop it with scripts/slurm-down.sh.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    echo "slurm-up.sh must run as root" >&2
    exit 1
fi

HOST="$(hostname -s)"
CPUS="$(nproc)"
MEM_MB="$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)"  # leave 20 % to the OS
CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf

alive() {  # alive PIDFILE: the process named in the pid file is running
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# --- packages --------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    packages=(slurmctld slurmd slurm-client munge)
    apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null; }
fi

# --- configuration ---------------------------------------------------------------------------
mkdir -p /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
chown slurm:slurm /var/lib/slurm/slurmctld /var/log/slurm

# A fake GPU (File=/dev/null) lets jobs that ask for `gpu: 1` be scheduled on a GPU-less machine.
# Without accounting, squeue is the plugin's status command: MinJobAge keeps finished jobs visible
# to it (it needs >= 3x its longest poll interval, 180 s) and to `scontrol show job` for an hour,
# so scripts/ci-slurm.sh can check every job of a run after the run.
cat > "$CONF.new" <<EOF
# Written by scripts/slurm-up.sh: one node, for CI and local trials.
ClusterName=voxelprompt
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=3600
ReturnToService=2
GresTypes=gpu
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
cat > "$GRES_CONF.new" <<EOF
AutoDetect=off
NodeName=$HOST Name=gpu File=/dev/null
EOF
changed=0
for file in "$CONF" "$GRES_CONF"; do
    if cmp -s "$file.new" "$file"; then
        rm "$file.new"
    else
        mv "$file.new" "$file"
        changed=1
    fi
done
if [ "$changed" = 1 ] && { alive /run/slurmctld.pid || alive /run/slurmd.pid; }; then
    bash "$(dirname "$0")/slurm-down.sh"  # running with another configuration: restart
fi

# --- munge (authentication between the SLURM daemons and clients) ----------------------------
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge
chown munge:munge /run/munge
if ! alive /run/munge/munged.pid; then
    runuser -u munge -- /usr/sbin/munged
fi
munge -n | unmunge >/dev/null

# --- daemons ---------------------------------------------------------------------------------
alive /run/slurmctld.pid || /usr/sbin/slurmctld
alive /run/slurmd.pid || /usr/sbin/slurmd

# --- wait until the node takes jobs ----------------------------------------------------------
for _ in $(seq 60); do
    state="$(sinfo -h -n "$HOST" -o %t 2>/dev/null || true)"
    case "$state" in
        idle|mix|alloc) echo "SLURM up: node $HOST ($CPUS CPUs, ${MEM_MB} MB, 1 fake GPU), partition debug"; exit 0 ;;
        inval*|down*|drain*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
done
echo "SLURM did not come up; node state: '${state:-none}'. See /var/log/slurm/." >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
