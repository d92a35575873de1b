#!/usr/bin/env bash
# Stop the cluster of .ci/slurm_up.sh: cancel its jobs, then stop slurmd, slurmctld and
# munged by the pids in their pid files, and wait until each has exited. Safe to run twice.
#
#   .ci/slurm_down.sh [--keep-munge]
set -euo pipefail

work=${JOBBER_SLURM_CI_DIR:-/tmp/jobber-slurm-ci}
keep_munge=no
[ "${1:-}" = --keep-munge ] && keep_munge=yes

running() { [ -s "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]; }

# Stop one daemon: SIGTERM, then wait (up to 30 s) for its pid to go.
stop() {
  local pidfile=$work/$1 name=$2 pid
  if ! running "$pidfile" "$name"; then
    return 0
  fi
  pid=$(cat "$pidfile")
  kill -TERM "$pid"
  for _ in $(seq 300); do
    [ -d "/proc/$pid" ] || { echo "stopped $name (pid $pid)"; return 0; }
    sleep 0.1
  done
  echo "slurm_down.sh: $name (pid $pid) did not exit within 30 s of SIGTERM" >&2
  return 1
}

# Jobs first, while slurmd is there to kill them: a job left running would outlive the
# daemons (each one lives in its own slurmstepd).
if running "$work/slurmctld.pid" slurmctld && running "$work/slurmd.pid" slurmd; then
  jobs=$(squeue -h -o %i 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    echo "cancelling jobs:" $jobs
    # shellcheck disable=SC2086
    scancel --full --signal=KILL $jobs 2>/dev/null || true
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    for _ in $(seq 600); do
      [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.1
    done
    [ -z "$(squeue -h -o %i 2>/dev/null)" ] || echo "slurm_down.sh: jobs still queued: $(squeue -h -o %i | tr '\n' ' ')" >&2
  fi
fi

stop slurmd.pid slurmd
stop slurmctld.pid slurmctld
if [ "$keep_munge" = no ]; then
  stop munged.pid munged
fi

# slurmd leaves its (now empty) cgroup tree behind, slurm_<node> under each v1 controller:
# rmdir removes only empty directories, so a cgroup still in use stays.
for tree in /sys/fs/cgroup/slurm_"$(hostname -s)" /sys/fs/cgroup/*/slurm_"$(hostname -s)"; do
  [ -d "$tree" ] && find "$tree" -depth -type d -exec rmdir {} + 2>/dev/null || true
done

leftover=$(pgrep -x slurmstepd || true)
if [ -n "$leftover" ]; then
  echo "slurm_down.sh: slurmstepd still running (pids $leftover): a job did not end" >&2
  exit 1
fi
