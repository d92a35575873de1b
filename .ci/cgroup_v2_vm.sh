#!/bin/bash
# Run a command of this repo inside a throwaway VM whose kernel has a *pure* cgroup v2
# hierarchy, and exit with the command's exit code.
#
#   usage: .ci/cgroup_v2_vm.sh [--workdir DIR] [--timeout SECONDS] [--cgroup PATH] [--bind PATH]...
#                              [--systemd [--user NAME] [--delegate "CONTROLLER..."]] -- COMMAND...
#   e.g.   .ci/cgroup_v2_vm.sh -- .venv/bin/python -m pytest -q tests/test_cgroup_v2.py
#
# Why a VM: the CI/dev machines have a hybrid cgroup layout (v1 controllers + a controller-less
# v2 mount) that cannot be switched at runtime, while most users run pure cgroup v2.
#
# How: Debian's stock kernel (the linux-image-amd64 .deb, booted with cgroup_no_v1=all) runs
# under qemu with software emulation (TCG; /dev/kvm here is PVM and cannot boot a stock kernel).
# The initramfs holds busybox, a few modules and .ci/vm_init.sh as /init, which rebuilds the
# host's file system layout from virtio-9p shares (host / read-only, the checkout read-write)
# so that the checkout and its .venv (and the Python installation behind it) have the same
# absolute paths as on the host; see vm_init.sh for the exact mounts.  COMMAND runs as root,
# with cwd = the checkout, in the root cgroup unless --cgroup is given.  Its output is relayed
# live to stdout; its exit code comes back through a writable 9p share.
#
# With --systemd the VM instead boots the host's systemd as PID 1 (flag cgv2_vm.systemd=1 on the
# kernel command line; vm_init.sh switches root into the assembled tree and starts systemd with
# one unit, cgv2-vm.service, instead of the default target), like a desktop/workstation host:
# as root, the unit creates user NAME (uid 2000, home /home/NAME), optionally widens the
# controllers systemd delegates to user managers (--delegate), enables lingering for NAME and
# starts user@2000.service; then COMMAND runs as NAME (runuser, no login session: in the unit's
# cgroup under system.slice) with XDG_RUNTIME_DIR and DBUS_SESSION_BUS_ADDRESS pointing to that
# user manager, so e.g. `systemd-run --user --scope -p Delegate=yes ...` works as on a desktop.
# The guest's /etc is then a writable copy of the host's and its /root is mode 755 (the Python
# installation may live below /root); the checkout stays read-only for NAME (owned by root on
# the host): Python writes no bytecode (PYTHONDONTWRITEBYTECODE=1) and pytest runs without its
# cache plugin (-p no:cacheprovider is added to PYTEST_ADDOPTS).  Temporary files go to /tmp.
# .ci/systemd_user_vm.sh is the short form.
#
# Options:
#   --workdir DIR   cache (kernel .deb, vmlinux, initramfs) and per-run scratch directories;
#                   default ${TMPDIR:-/tmp}/jobber-cgv2-vm.  With it cached, boot + shutdown
#                   take ~10-15 s; the command itself runs ~10-30x slower than on the host
#                   (emulated CPU): keep heavy pytest plugins out, e.g. with
#                   PYTEST_ADDOPTS="-p no:nbval -p no:schemathesis -p no:hypothesispytest".
#   --timeout S     kill the VM after S seconds (default 600); exit code 124 then.
#   --cgroup PATH   run COMMAND in cgroup PATH (e.g. /ci.slice/pytest.scope), created with all
#                   controllers enabled down to it, like systemd places a login session.
#                   Not with --systemd (systemd owns the hierarchy there).
#   --bind PATH     also make host PATH visible (read-only) at the same path in the guest.
#   --systemd       boot systemd and run COMMAND as an unprivileged user (see above); boot +
#                   user manager + shutdown take ~20-25 s (2 idle host CPUs; twice that when
#                   another VM runs).
#   --user NAME     the user of --systemd (default data; always uid 2000: 1000 is taken on
#                   the image).
#   --delegate "C..."  with --systemd: controllers user@.service delegates to the user manager,
#                   e.g. "cpu cpuset io memory pids" (a drop-in user@.service.d/delegate.conf).
#                   Default: the distribution's own setting (Debian 12: cpu memory pids).
#   --extra-user NAME  with --systemd: a second ordinary user (uid 2001, home /home/NAME) with
#                   its own lingering user manager, as --user gets; COMMAND then runs as root
#                   (to act as either user, with runuser), with JOBBER_TEST_USERS="USER NAME".
# Debug knobs (environment): CGV2_VM_ACCEL (qemu -accel, default tcg,thread=multi), CGV2_VM_CPU
# (qemu -cpu, default max), CGV2_VM_APPEND (extra kernel command line).
# To get a newer kernel, delete DIR/cache.
# Environment forwarded to the guest: every JOBBER_* and PYTEST_* variable, CI, PY_COLORS,
# NO_COLOR, FORCE_COLOR.  Also set: HOME=/root (--systemd: /home/NAME, plus USER, LOGNAME,
# XDG_RUNTIME_DIR=/run/user/2000, DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/2000/bus,
# PYTHONDONTWRITEBYTECODE=1), LANG=C.UTF-8, PATH=<repo>/.venv/bin:<system>,
# PYTHONUNBUFFERED=1, JOBBER_TEST_BLOCK_DIR=/var/tmp/jobber-disk (ext4 on the virtio disk
# /dev/vda, when mkfs.ext4 is available on the host).
# Exit codes: COMMAND's; 124 if the VM timed out; 125 if the VM failed before reporting one
# (with --systemd also when the user or the user manager could not be set up).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
INIT="$REPO/.ci/vm_init.sh"
WORKDIR=${TMPDIR:-/tmp}/jobber-cgv2-vm
TIMEOUT=600
CGROUP=
BINDS=()
SYSTEMD=
SD_USER=
SD_DELEGATE=
SD_EXTRA=
SD_UID=2000
MEM_MB=2048
SMP=2
# Kernel modules to put into the initramfs (their dependencies are added).
MODULES="virtio_pci virtio_blk 9pnet_virtio 9p ext4 crc32c_generic"

usage() { sed -n '5,7s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }
while (($#)); do
    case $1 in
        --workdir) WORKDIR=${2:?--workdir needs a value}; shift 2 ;;
        --timeout) TIMEOUT=${2:?--timeout needs a value}; shift 2 ;;
        --cgroup) CGROUP=${2:?--cgroup needs a value}; shift 2 ;;
        --bind) BINDS+=("$(realpath -e "${2:?--bind needs a value}")"); shift 2 ;;
        --systemd) SYSTEMD=1; shift ;;
        --user) SD_USER=${2:?--user needs a value}; shift 2 ;;
        --delegate) SD_DELEGATE=${2?--delegate needs a value}; shift 2 ;;
        --extra-user) SD_EXTRA=${2:?--extra-user needs a value}; shift 2 ;;
        --) shift; break ;;
        -h | --help) usage ;;
        -*) echo "unknown option: $1" >&2; usage ;;
        *) break ;;
    esac
done
(($#)) || usage
if [[ -n $SYSTEMD ]]; then
    [[ -z $CGROUP ]] || { echo "--cgroup and --systemd exclude each other" >&2; usage; }
    SD_USER=${SD_USER:-data}
    [[ $SD_USER =~ ^[a-z_][a-z0-9_-]{0,30}$ ]] || { echo "bad user name: $SD_USER" >&2; exit 2; }
    [[ -z $SD_EXTRA || ($SD_EXTRA =~ ^[a-z_][a-z0-9_-]{0,30}$ && $SD_EXTRA != "$SD_USER") ]] ||
        { echo "bad extra user name: $SD_EXTRA" >&2; exit 2; }
    [[ $SD_DELEGATE =~ ^[a-z_\ ]*$ ]] || { echo "bad controller list: $SD_DELEGATE" >&2; exit 2; }
else
    [[ -z $SD_USER && -z $SD_DELEGATE && -z $SD_EXTRA ]] ||
        { echo "--user, --delegate and --extra-user need --systemd" >&2; usage; }
fi
mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd -P)
CACHE="$WORKDIR/cache"
mkdir -p "$CACHE"

log() { echo "[cgv2-vm] $*" >&2; }
die() { log "ERROR: $*"; exit 125; }
# step NAME CMD...: run CMD and print how long it took.
step() {
    local name=$1 t0=$EPOCHREALTIME
    shift
    "$@"
    local us=$(( (${EPOCHREALTIME/./} - ${t0/./}) ))
    log "$(printf 'step %-12s %6d.%01ds' "$name" $((us / 1000000)) $((us % 1000000 / 100000)))"
}
T_START=$EPOCHREALTIME

# --- host packages ----------------------------------------------------------------------------
APT_UPDATED=
apt_update() {
    [[ -n $APT_UPDATED ]] || { apt-get update -qq; APT_UPDATED=1; }
}
install_packages() {
    local pkg missing=()
    for pkg in qemu-system-x86 busybox-static cpio; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]}"
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# --- kernel: Debian's linux-image .deb, downloaded once into the cache -------------------------
fetch_kernel() {
    KERNEL_DEB=$(ls "$CACHE"/linux-image-*.deb 2>/dev/null | head -n1 || true)
    [[ -z $KERNEL_DEB ]] || return 0
    local pkg
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}' || true)
    if [[ -z $pkg ]]; then
        apt_update
        pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
    fi
    [[ -n $pkg ]] || die "cannot find the kernel package behind linux-image-amd64"
    log "downloading $pkg"
    local dl
    dl=$(mktemp -d "$WORKDIR/download.XXXXXX")
    chmod 777 "$dl" # apt-get download drops privileges to the _apt user
    (cd "$dl" && apt-get download -q "$pkg" >/dev/null)
    mv "$dl"/*.deb "$CACHE/"
    rmdir "$dl"
    KERNEL_DEB=$(ls "$CACHE"/linux-image-*.deb | head -n1)
}

# --- boot files: the kernel and the initramfs (busybox + modules + vm_init.sh) ---------------
# The bzImage decompresses itself at boot, which takes ~8 s under emulation; qemu can boot the
# uncompressed ELF vmlinux directly (PVH entry point, CONFIG_PVH=y in Debian's kernels), so
# decompress it once here.  vmlinuz = setup code + a compressed payload found by its magic.
extract_vmlinux() { # VMLINUZ OUT
    local magic off
    for magic in '\xfd7zXZ\x00:xz -dc' '\x28\xb5\x2f\xfd:zstd -qdc' '\x1f\x8b\x08:gzip -dc'; do
        off=$(LC_ALL=C grep -obaP -m1 "${magic%%:*}" "$1" | head -n1 | cut -d: -f1 || true)
        [[ -n $off ]] || continue
        # (the decompressor complains about the trailing data)
        tail -c +$((off + 1)) "$1" | ${magic#*:} >"$2" 2>/dev/null || true
        [[ $(head -c 4 "$2") == $'\x7fELF' ]] && return 0
    done
    return 1
}
# Rebuilt when an input changes (this script included).
build_boot_files() {
    local key
    key=$(cat "$INIT" "${BASH_SOURCE[0]}" /bin/busybox <(echo "$KERNEL_DEB $MODULES") | sha256sum | cut -c1-16)
    INITRD="$CACHE/initrd-$key.cpio"
    KERNEL="$CACHE/vmlinux-$key"
    [[ -f $INITRD && -f $KERNEL ]] && return 0
    local x kdir m
    BUILD="$WORKDIR/build.$$"
    x=$BUILD
    rm -rf "$x"
    mkdir -p "$x/deb" "$x/root"/{bin,mod,proc,sys,dev}
    dpkg-deb -x "$KERNEL_DEB" "$x/deb"
    rm -f "$CACHE"/vmlinux-* "$CACHE"/initrd-*
    extract_vmlinux "$x"/deb/boot/vmlinuz-* "$KERNEL.tmp" || cp "$x"/deb/boot/vmlinuz-* "$KERNEL.tmp"
    kdir=$(echo "$x"/deb/lib/modules/*)
    # The .deb has no modules.dep (depmod runs at install time, and kmod may be missing here):
    # read each module's "depends=" from its .modinfo section, load dependencies first.
    declare -A KO=() DONE=()
    local f
    while IFS= read -r f; do
        m=${f##*/}
        m=${m%%.ko*}
        KO[${m//-/_}]=$f
    done < <(find "$kdir/kernel" -name '*.ko*')
    add_module() {
        local m=${1//-/_} dep
        [[ -z ${DONE[$m]:-} ]] || return 0
        DONE[$m]=1
        if [[ -z ${KO[$m]:-} ]]; then
            grep -qE "/${m//_/[_-]}\.ko" "$kdir/modules.builtin" || die "no kernel module $m"
            return 0 # built into the kernel
        fi
        case ${KO[$m]} in
            *.ko) cp "${KO[$m]}" "$x/root/mod/$m.ko" ;;
            *.ko.xz) xz -dc "${KO[$m]}" >"$x/root/mod/$m.ko" ;;
            *.ko.zst) zstd -qdc "${KO[$m]}" >"$x/root/mod/$m.ko" ;;
            *) die "unsupported module file ${KO[$m]}" ;;
        esac
        for dep in $(tr '\0' '\n' <"$x/root/mod/$m.ko" | sed -n 's/^depends=//p' | tr , ' '); do
            add_module "$dep"
        done
        echo "$m" >>"$x/root/mod/order"
    }
    for m in $MODULES; do add_module "$m"; done
    cp /bin/busybox "$x/root/bin/busybox"
    cp "$INIT" "$x/root/init"
    chmod 755 "$x/root/init"
    # Uncompressed: unpacking it is cheaper than decompressing it under emulation.
    (cd "$x/root" && find . | cpio -o -H newc --quiet) >"$INITRD.tmp"
    mv "$INITRD.tmp" "$INITRD"
    mv "$KERNEL.tmp" "$KERNEL"
    log "initramfs modules: $(tr '\n' ' ' <"$x/root/mod/order")"
    rm -rf "$x"
    BUILD=
}

# --- per-run directory: the "ci" share (config, binds, run.sh, rc) and the virtio disk ---------
shq() { printf "'%s'" "${1//\'/\'\\\'\'}"; } # quote for the guest's busybox sh
prepare_run() {
    RUN=$(mktemp -d "$WORKDIR/run.XXXXXX")
    mkdir "$RUN/ci"
    # The venv's python is a symlink into a Python installation elsewhere (e.g. pyenv's):
    # make that installation visible too, unless it is already (under /usr or the checkout).
    local py="$REPO/.venv/bin/python" prefix p
    if [[ -x $py ]]; then
        prefix=$("$py" -c 'import sys; print(sys.base_prefix)')
        [[ $prefix == /usr || $prefix == /usr/* || $prefix == "$REPO"/* ]] || BINDS+=("$prefix")
    else
        log "warning: no $py (run make first?)"
    fi
    for p in "${BINDS[@]}"; do
        [[ $p != *$'\n'* ]] || die "path with a newline: $p"
        echo "$p"
    done >"$RUN/ci/binds"

    # A real block device for io.max tests: ext4 on a sparse image, mounted in the guest.
    local disk=raw
    truncate -s 1G "$RUN/disk.img"
    if command -v mkfs.ext4 >/dev/null; then
        mkfs.ext4 -q -F -L jobber-disk "$RUN/disk.img"
        disk=ext4
    else
        log "warning: no mkfs.ext4, the virtio disk stays unformatted"
    fi
    {
        echo "REPO=$(shq "$REPO")"
        echo "DISK=$disk"
    } >"$RUN/ci/config"

    if [[ -n $SYSTEMD ]]; then
        write_systemd_run "$disk" "$@" >"$RUN/ci/run.sh"
        return
    fi
    # run.sh: executed by the guest's bash in an empty environment.
    local name
    {
        echo 'set -e'
        for name in $(compgen -e); do
            [[ $name =~ ^(JOBBER_|PYTEST_)|^(CI|PY_COLORS|NO_COLOR|FORCE_COLOR)$ ]] || continue
            printf 'export %s=%q\n' "$name" "${!name}"
        done
        printf 'export HOME=/root LANG=C.UTF-8 PYTHONUNBUFFERED=1\n'
        printf 'export PATH=%q\n' "$REPO/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        [[ $disk != ext4 ]] || echo 'export JOBBER_TEST_BLOCK_DIR=/var/tmp/jobber-disk'
        if [[ -n $CGROUP ]]; then
            # cgroup v2: processes only in leaves (except in the root), so enable the
            # controllers in every ancestor of the target and move this shell into it.
            printf 'cg=%q\n' "/sys/fs/cgroup/${CGROUP#/}"
            cat <<'EOF'
mkdir -p "$cg"
d=/sys/fs/cgroup
for part in $(realpath -m --relative-to=/sys/fs/cgroup "$cg" | tr / ' '); do
    for c in $(<"$d/cgroup.controllers"); do echo "+$c" >"$d/cgroup.subtree_control"; done
    d=$d/$part
done
echo $$ >"$cg/cgroup.procs"
EOF
        fi
        printf 'cd %q\n' "$REPO"
        # stdin from /dev/null: nothing may read the console.  Output goes through a pipe so
        # that the command does not believe it writes to a terminal (no colours, no \r).
        printf 'set +e\n%s </dev/null 2>&1 | cat\nexit ${PIPESTATUS[0]}\n' "$(printf '%q ' "$@")"
    } >"$RUN/ci/run.sh"
}

# run.sh of --systemd: run by cgv2-vm.service (as root, empty environment, stdout on the serial
# console) once systemd, dbus and logind are up.  A root prologue makes the user and its
# lingering user manager, then COMMAND runs as that user.  Exit code: COMMAND's, or 125 when
# the prologue failed (COMMAND did not run).
write_systemd_run() { # DISK COMMAND...
    local disk=$1 name home=/home/$SD_USER rundir=/run/user/$SD_UID
    shift
    local -a user_env=(HOME="$home" USER="$SD_USER" LOGNAME="$SD_USER" SHELL=/bin/bash
        LANG=C.UTF-8 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
        XDG_RUNTIME_DIR="$rundir" DBUS_SESSION_BUS_ADDRESS="unix:path=$rundir/bus"
        PATH="$REPO/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    [[ $disk != ext4 ]] || user_env+=(JOBBER_TEST_BLOCK_DIR=/var/tmp/jobber-disk)
    # The checkout is not writable for the user: no .pytest_cache.
    local addopts=${PYTEST_ADDOPTS:-}
    [[ $addopts == *no:cacheprovider* ]] || addopts="${addopts:+$addopts }-p no:cacheprovider"
    user_env+=(PYTEST_ADDOPTS="$addopts")
    for name in $(compgen -e); do
        [[ $name =~ ^(JOBBER_|PYTEST_)|^(CI|PY_COLORS|NO_COLOR|FORCE_COLOR)$ ]] || continue
        [[ $name != PYTEST_ADDOPTS ]] || continue
        user_env+=("$name=${!name}")
    done
    printf 'U=%q UID_=%q HOME_=%q RUNDIR=%q DELEGATE=%q REPO=%q EXTRA=%q\n' \
        "$SD_USER" "$SD_UID" "$home" "$rundir" "$SD_DELEGATE" "$REPO" "$SD_EXTRA"
    cat <<'EOF'
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
log() { echo "[vm] $*"; }
up() { cut -d' ' -f1 /proc/uptime; }
fatal() {
    log "FATAL: $* (the command did not run: exit code 125)"
    systemctl list-units --failed --no-legend --plain --no-pager 2>&1 | sed 's/^/[vm] failed unit: /'
    exit 125
}
log "systemd $(systemctl --version | sed -n '1s/^systemd \([^ ]*\).*/\1/p') up (state $(systemctl is-system-running 2>&1)), prologue at uptime $(up)s"
if [ -n "$DELEGATE" ]; then
    mkdir -p /etc/systemd/system/user@.service.d
    printf '[Service]\nDelegate=%s\n' "$DELEGATE" >/etc/systemd/system/user@.service.d/delegate.conf
    systemctl daemon-reload || fatal "systemctl daemon-reload failed"
fi
user_with_manager() { # NAME UID
    local U=$1 UID_=$2 RUNDIR=/run/user/$2 i ucg
    useradd -m -u "$UID_" -U -d "/home/$U" -s /bin/bash "$U" || fatal "useradd $U failed"
    # After the delegation drop-in: enable-linger starts the user manager, which reads it.
    loginctl enable-linger "$U" || fatal "loginctl enable-linger $U failed"
    systemctl start "user@$UID_.service" || {
        systemctl status --no-pager "user@$UID_.service" "user-runtime-dir@$UID_.service" 2>&1 | tail -20
        fatal "cannot start user@$UID_.service"
    }
    for i in $(seq 600); do # 60 s
        [ -S "$RUNDIR/systemd/private" ] && break
        sleep 0.1
    done
    [ -S "$RUNDIR/systemd/private" ] || {
        systemctl status --no-pager "user@$UID_.service" 2>&1 | tail -20
        fatal "no $RUNDIR/systemd/private after 60 s: the user manager of $U is not up"
    }
    [ -S "$RUNDIR/bus" ] || log "warning: no user bus $RUNDIR/bus"
    ucg=/sys/fs/cgroup/user.slice/user-$UID_.slice/user@$UID_.service
    log "user@$UID_.service up at uptime $(up)s; $ucg/cgroup.controllers: $(cat "$ucg/cgroup.controllers")"
}
user_with_manager "$U" "$UID_"
[ -z "$EXTRA" ] || user_with_manager "$EXTRA" $((UID_ + 1))
[ -n "$EXTRA" ] && log "running the command as root, for $(id "$U") and $(id "$EXTRA")" ||
    log "running the command as $(id "$U")"
cd "$REPO" || fatal "cannot cd to $REPO"
EOF
    # runuser: no PAM session (Debian's runuser PAM stack has no pam_systemd), so COMMAND stays
    # in cgv2-vm.service's cgroup; stdin from /dev/null, output through a pipe (no terminal).
    if [[ -n $SD_EXTRA ]]; then
        local -a root_env=(HOME=/root USER=root LOGNAME=root JOBBER_TEST_USERS="$SD_USER $SD_EXTRA")
        for name in "${user_env[@]:3}"; do # not the user's session variables
            [[ $name =~ ^(XDG_RUNTIME_DIR|DBUS_SESSION_BUS_ADDRESS)= ]] || root_env+=("$name")
        done
        printf 'env -i %s</dev/null 2>&1 | cat\n' "$(printf '%q ' "${root_env[@]}" "$@")"
    else
        printf 'runuser -u "$U" -- env -i %s</dev/null 2>&1 | cat\n' "$(printf '%q ' "${user_env[@]}" "$@")"
    fi
    cat <<'EOF'
rc=${PIPESTATUS[0]}
systemctl list-units --failed --no-legend --plain --no-pager 2>&1 | sed 's/^/[vm] failed unit: /'
exit "$rc"
EOF
}

# --systemd: the flag for vm_init.sh and the one unit to boot into (systemd, when not in a
# container, reads systemd.unit= from the kernel command line only, not from its argv), with
# systemd's status lines (failures and delays only, with "quiet") uncoloured.
SYSTEMD_APPEND="cgv2_vm.systemd=1 systemd.unit=cgv2-vm.service SYSTEMD_COLORS=0"
# --- boot ----------------------------------------------------------------------------------------
boot() {
    local qemu_rc=0 tail_pid
    : >"$RUN/console.log"
    # -no-reboot + panic=-1: a kernel panic (e.g. /init dying) ends qemu at once.
    timeout -k 10 "$TIMEOUT" qemu-system-x86_64 \
        -accel "${CGV2_VM_ACCEL:-tcg,thread=multi}" -cpu "${CGV2_VM_CPU:-max}" -smp "$SMP" -m "$MEM_MB" -M q35 \
        -kernel "$KERNEL" -initrd "$INITRD" \
        -append "console=ttyS0 quiet loglevel=3 panic=-1 ${CGV2_VM_APPEND:-} cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1${SYSTEMD:+ $SYSTEMD_APPEND}" \
        -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
        -virtfs local,path="$REPO",mount_tag=repo,security_model=none,multidevs=remap \
        -virtfs local,path="$RUN/ci",mount_tag=ci,security_model=none \
        -drive file="$RUN/disk.img",if=virtio,format=raw,cache=none \
        -display none -serial file:"$RUN/console.log" -monitor none -no-reboot -nic none &
    QEMU_PID=$!
    # Relay the serial console live (without the \r of the guest tty).
    tail -n +1 -F --pid="$QEMU_PID" "$RUN/console.log" 2>/dev/null | sed -u 's/\r$//' &
    tail_pid=$!
    wait "$QEMU_PID" || qemu_rc=$?
    QEMU_PID=
    wait "$tail_pid" || true
    if [[ ! -s $RUN/ci/rc ]]; then
        if ((qemu_rc == 124 || qemu_rc == 137)); then # timeout(1): TERM, then KILL
            log "ERROR: the VM timed out after ${TIMEOUT}s"
            RC=124
            return
        fi
        log "ERROR: the VM stopped (qemu exit code $qemu_rc) without reporting the command's exit code"
        RC=125
        return
    fi
    RC=$(<"$RUN/ci/rc")
}

QEMU_PID=
RUN=
BUILD=
cleanup() {
    [[ -z $QEMU_PID ]] || kill "$QEMU_PID" 2>/dev/null || true
    [[ -z $RUN ]] || rm -rf "$RUN"
    [[ -z $BUILD ]] || rm -rf "$BUILD"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

step packages install_packages
# The cache is shared by concurrent runs: build it under a lock.
exec 9>"$WORKDIR/cache.lock"
flock 9
step kernel fetch_kernel
step bootfiles build_boot_files
flock -u 9
step prepare prepare_run "$@"
log "booting $(basename "$KERNEL_DEB" .deb)${SYSTEMD:+ with systemd, as user $SD_USER (uid $SD_UID)${SD_DELEGATE:+, delegating $SD_DELEGATE}} (timeout ${TIMEOUT}s): $*"
RC=125
step boot+command boot
us=$(( ${EPOCHREALTIME/./} - ${T_START/./} ))
log "exit code $RC, total $((us / 1000000)).$((us % 1000000 / 100000))s"
exit "$RC"
