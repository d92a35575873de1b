#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for tests/test_slurm.py and
# notebooks/04-slurm.ipynb: munged, slurmctld and slurmd from Debian (22.05), no systemd.
#
#   .ci/slurm_up.sh      # idempotent: installs only what is missing, starts only what is down
#   .ci/slurm_down.sh    # stops the daemons by their pid files
#
# Daemon state, logs and pid files live in $JOBBER_SLURM_CI_DIR (default /tmp/jobber-slurm-ci).
# The configuration goes to /etc/slurm (where sbatch and friends look without SLURM_CONF);
# a slurm.conf not written by this script is never overwritten.
#
# Two partitions: "debug" (default, no time limit) and "tiny" (MaxTime 1 minute), so a
# submission over a partition's limit is refused at submit time (EnforcePartLimits=ALL).
# Jobs are confined with cgroups (proctrack/cgroup + task/cgroup, ConstrainRAMSpace) as
# measured on these machines; cgroup v1 or v2 is autodetected.
# Without slurmdbd, finished jobs are read from scontrol for MinJobAge (300 s), then from
# the job completion log (JobCompType=jobcomp/filetxt, `sacct -c`).
set -euo pipefail

work=${JOBBER_SLURM_CI_DIR:-/tmp/jobber-slurm-ci}
conf=/etc/slurm/slurm.conf
marker="# written by jobber .ci/slurm_up.sh"
apt_get=(apt-get -o DPkg::Lock::Timeout=600)
t0=$(date +%s.%N)

say() { printf '[%5.1fs] %s\n' "$(echo "$(date +%s.%N) - $t0" | bc)" "$*"; }
die() { echo "slurm_up.sh: $*" >&2; exit 1; }
# A pid file names a live process of this program (pids are reused: check the name too).
running() { [ -s "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]; }

[ "$(id -u)" = 0 ] || die "run as root (the daemons and their cgroups need it)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurmctld slurmd slurm-client munge"
  "${apt_get[@]}" update -qq
  # policy-rc.d keeps the packages from starting the daemons: this script starts them.
  DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
fi

install -d -m 0755 "$work"
install -d -o munge -g munge -m 0700 "$work/munge"
install -d -o slurm -g slurm -m 0755 "$work/state" "$work/log"
install -d -m 0755 "$work/spool" /etc/slurm

if ! running "$work/munged.pid" munged; then
  say "starting munged"
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  # munged writes its pid file as the munge user, hence a pid file in its own directory;
  # the ln keeps every pid file side by side for slurm_down.sh.
  runuser -u munge -- munged --pid-file="$work/munge/munged.pid" --log-file="$work/munge/munged.log"
  ln -sf munge/munged.pid "$work/munged.pid"
fi
munge -n | unmunge >/dev/null || die "munge does not work: see $work/munge/munged.log"

host=$(hostname -s)
cpus=$(nproc)
memory_mib=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
new_conf=$(cat <<CONF
$marker; ClusterName=ci, one node: $host
ClusterName=ci
SlurmctldHost=$host
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
SchedulerType=sched/backfill
# Batch jobs are scheduled by slurmctld's once-a-second loop, after up to batch_sched_delay
# (3 s by default, for high submission rates): no delay, so a job starts within ~1 s.
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job that asks for no memory is given the whole node, so no
# second job could run beside it: give each CPU its share instead.
DefMemPerCPU=$(( memory_mib / cpus ))
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$work/log/jobcomp.log
EnforcePartLimits=ALL
# Seconds between scancel's SIGTERM and its SIGKILL (30 by default): short, so that a job
# ignoring SIGTERM is gone within seconds of jobber's stop().
KillWait=5
ReturnToService=2
MinJobAge=300
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$memory_mib State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=tiny Nodes=ALL MaxTime=00:01:00 State=UP
CONF
)
new_cgroup_conf=$(cat <<CONF
$marker
CgroupPlugin=autodetect
ConstrainCores=yes
ConstrainRAMSpace=yes
ConstrainSwapSpace=no
CONF
)

if [ -e "$conf" ] && ! grep -qF "$marker" "$conf"; then
  die "$conf exists and was not written by this script: not overwriting a real configuration"
fi
if [ "$(cat "$conf" 2>/dev/null)" != "$new_conf" ] || [ "$(cat /etc/slurm/cgroup.conf 2>/dev/null)" != "$new_cgroup_conf" ]; then
  if running "$work/slurmctld.pid" slurmctld || running "$work/slurmd.pid" slurmd; then
    say "configuration changed: restarting the daemons"
    "$(dirname "$0")/slurm_down.sh" --keep-munge
  fi
  say "writing $conf and cgroup.conf"
  printf '%s\n' "$new_conf" > "$conf"
  printf '%s\n' "$new_cgroup_conf" > /etc/slurm/cgroup.conf
fi

if ! running "$work/slurmctld.pid" slurmctld; then
  say "starting slurmctld"
  slurmctld
fi
registered_after=0
if ! running "$work/slurmd.pid" slurmd; then
  say "starting slurmd"
  registered_after=$(date +%s)
  slurmd
fi

# The node is usable once the slurmd just started has registered (slurmctld otherwise shows
# the state it saved before) and it is idle, or running jobs when started before.
node_state() { sinfo -h -N -n "$host" -o %T 2>/dev/null | head -1; }
registered() {
  local at
  at=$(SLURM_TIME_FORMAT=%s scontrol show node -o "$host" 2>/dev/null | grep -oE 'SlurmdStartTime=[0-9]+' | cut -d= -f2)
  [ "${at:-0}" -ge "$registered_after" ]
}
deadline=$(( $(date +%s) + 60 ))
until registered && [[ "$(node_state)" =~ ^(idle|mixed|allocated|completing)$ ]]; do
  # A node drained by an earlier run (a job that would not die) comes back by hand.
  if [[ "$(node_state)" =~ ^drain ]]; then
    scontrol update NodeName="$host" State=RESUME || true
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "slurm_up.sh: node $host is '$(node_state)' after 60 s; the logs end with:" >&2
    tail -n 20 "$work"/log/*.log >&2
    exit 1
  fi
  sleep 0.2
done
say "cluster up: node $host $(node_state), $cpus CPUs, $memory_mib MiB"
sinfo
