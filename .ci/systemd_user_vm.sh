#!/bin/bash
# Run a command of this repo as an unprivileged user of a systemd host with pure cgroup v2: the
# setup most data scientists have (an Ubuntu/Debian/Fedora workstation).  A thin wrapper of
# cgroup_v2_vm.sh --systemd (read its header): systemd is PID 1, user "data" (uid 2000) has a
# lingering user manager (user@2000.service), and COMMAND runs as that user with
# XDG_RUNTIME_DIR / DBUS_SESSION_BUS_ADDRESS of that manager, cwd = the checkout; the script
# exits with COMMAND's exit code (124: VM timeout, 125: VM or user setup failed).
#
#   usage: .ci/systemd_user_vm.sh [--default-delegation] [cgroup_v2_vm.sh options] -- COMMAND...
#   e.g.   .ci/systemd_user_vm.sh -- .venv/bin/python -m pytest -q tests/test_systemd.py
#
# By default a drop-in makes user@.service delegate "cpu cpuset io memory pids" to the user
# manager (an admin's widened delegation; io is what io.max limits need).  --default-delegation
# keeps the distribution's setting instead: the user@.service of Debian 12's systemd 252 says
# Delegate=pids memory cpu (no io, no cpuset), as on stock Debian/Ubuntu workstations.
set -euo pipefail
DELEGATE=(--delegate "cpu cpuset io memory pids")
ARGS=()
while (($#)); do
    case $1 in
        --default-delegation) DELEGATE=(); shift ;;
        -h | --help) sed -n '9,10s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
        --) break ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
exec "$(dirname "${BASH_SOURCE[0]}")/cgroup_v2_vm.sh" --systemd --user data "${DELEGATE[@]}" "${ARGS[@]}" "$@"
