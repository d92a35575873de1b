#!/bin/busybox sh
# PID 1 of the cgroup v2 CI VM started by .ci/cgroup_v2_vm.sh (it is packed into the initramfs as
# /init; busybox is the only binary of the initramfs, so this is POSIX sh, not bash).
#
# It assembles a root file system that looks like the host, at the same absolute paths, and
# runs the command in it with chroot:
#   /                   tmpfs, plus the host's top-level symlinks (bin -> usr/bin, lib64, ...)
#   /usr /etc           host, read-only         (9p share "hostroot" = host /, read-only)
#   PYTHON PREFIX ...   host, read-only         (paths listed in /ci/binds, e.g. /root/.pyenv/...)
#   REPO                host checkout, READ-WRITE (9p share "repo")
#   REPO/.venv          host, read-only (from the cached "hostroot" share: imports are faster)
#   /proc /sys /dev /dev/pts /dev/shm           fresh kernel file systems
#   /sys/fs/cgroup      cgroup2 (the kernel boots with cgroup_no_v1=all: pure v2 hierarchy)
#   /tmp /run /root /dev/shm, / (so /var/tmp)  tmpfs (writable, empty)
#   /var/tmp/jobber-disk  ext4 on the virtio disk /dev/vda (a real block device, for io.max)
#   /run/cgv2-vm        the per-run 9p share "ci": config, run.sh (the command), rc (exit code)
# The command's exit code is written to /ci/rc; if that file is missing the host reports a
# VM failure.  Messages of this script start with "[vm]".
#
# systemd mode (cgv2_vm.systemd=1 on the kernel command line, from cgroup_v2_vm.sh --systemd):
# the same tree, except that /etc is a writable copy of the host's (useradd, loginctl
# enable-linger, unit drop-ins write there; its fstab is emptied, since everything is mounted
# already, and its hostname is cgv2-vm) and /root is mode 755 (the venv's Python installation
# may be below it, and the command runs as an unprivileged user).  Then, instead of chroot, it
# switches root and execs the host's systemd, booting into cgv2-vm.service: a unit that
# wants the system bus and logind, runs run.sh (which sets up the user and runs the command),
# writes its exit code to /run/cgv2-vm/rc and powers off.  Only that unit and its dependencies
# start (sysinit.target & co.), not the image's default target.

/bin/busybox --install -s /bin
export PATH=/bin
log() { echo "[vm] $*"; }
die() { log "FATAL: $*"; sync; poweroff -f; sleep 10; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
SYSTEMD=
grep -qw 'cgv2_vm.systemd=1' /proc/cmdline && SYSTEMD=1
mount -t devtmpfs devtmpfs /dev

# Modules needed before the root exists (virtio, 9p, virtio-blk, ext4), dependencies first.
[ -f /mod/order ] || die "no /mod/order in the initramfs"
for m in $(cat /mod/order); do
    insmod "/mod/$m.ko" || log "insmod $m failed"
done

# msize: larger 9p messages = fewer round trips.  The read-only root can be cached aggressively
# (cache=loose); the writable shares use the default (no cache) so every write reaches the host
# immediately, even if the command leaves processes behind that keep files open.
P9="trans=virtio,version=9p2000.L,msize=512000"
mkdir -p /host /ci /newroot
mount -t 9p -o "$P9,ro,cache=loose" hostroot /host || die "cannot mount the host root (9p)"
mount -t 9p -o "$P9" ci /ci || die "cannot mount the ci share (9p)"
. /ci/config                  # REPO, DISK (written by the host script)

R=/newroot
mount -t tmpfs -o mode=755 rootfs "$R"
mkdir -p "$R/usr" "$R/etc" "$R/proc" "$R/sys" "$R/dev" "$R/run" "$R/var/tmp" "$R/home" "$R/mnt"
mkdir -p -m 700 "$R/root"
mkdir -p -m 1777 "$R/tmp"
chmod 1777 "$R/var/tmp"
# Replicate the host's top-level symlinks (merged /usr: bin -> usr/bin, lib64 -> usr/lib64, ...),
# or bind /bin, /lib, ... if they are real directories (a host without merged /usr).
for e in /host/*; do
    [ -L "$e" ] && ln -s "$(readlink "$e")" "$R/${e#/host/}"
done
for d in bin sbin lib lib32 lib64 libx32; do
    if [ -d "/host/$d" ] && [ ! -L "/host/$d" ]; then
        mkdir -p "$R/$d" && mount --bind "/host/$d" "$R/$d"
    fi
done
# Bind mounts (not a chroot into /host itself): mounting proc/sys/... over directories of a 9p
# file system does not stick, so the kernel file systems go onto the tmpfs instead.
mount --bind /host/usr "$R/usr"
if [ -n "$SYSTEMD" ]; then
    cp -a /host/etc/. "$R/etc/" || die "cannot copy /etc"
    echo '# cgv2-vm: everything is mounted by /init' >"$R/etc/fstab"
    echo cgv2-vm >"$R/etc/hostname"
else
    mount --bind /host/etc "$R/etc"
fi
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
# Same options as systemd uses on pure v2 hosts; fall back if the kernel lacks one.
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 "$R/sys/fs/cgroup" ||
    mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup" || die "cannot mount cgroup2"
mount -t devtmpfs devtmpfs "$R/dev"
mkdir -p "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R/dev/pts"
ln -sf pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o mode=1777 shm "$R/dev/shm"
ln -sf /proc/self/fd "$R/dev/fd"
ln -sf /proc/self/fd/0 "$R/dev/stdin"
ln -sf /proc/self/fd/1 "$R/dev/stdout"
ln -sf /proc/self/fd/2 "$R/dev/stderr"
mount -t tmpfs -o mode=1777 tmp "$R/tmp"
mount -t tmpfs -o mode=755 run "$R/run"
if [ -n "$SYSTEMD" ]; then
    mount -t tmpfs -o mode=755 roothome "$R/root"
else
    mount -t tmpfs -o mode=700 roothome "$R/root"
fi

# Extra read-only host paths (the Python installation the venv points to, --bind PATHs), then
# the checkout, read-write.  Mount points are created in the tmpfs layers above as needed.
while IFS= read -r p; do
    [ -n "$p" ] || continue
    mkdir -p "$R$p" && mount --bind "/host$p" "$R$p" || die "cannot bind $p"
done < /ci/binds
mkdir -p "$R$REPO"
mount -t 9p -o "$P9" repo "$R$REPO" || die "cannot mount the checkout $REPO (9p)"
# The checkout's venv: read-only from the cached host root.  Under emulation Python's imports
# (thousands of stat/open calls, each a 9p round trip without a cache) are the slowest part.
if [ -d "/host$REPO/.venv" ] && [ ! -L "/host$REPO/.venv" ]; then
    mount --bind "/host$REPO/.venv" "$R$REPO/.venv" || die "cannot bind $REPO/.venv"
fi

if [ "$DISK" = ext4 ]; then
    mkdir -p "$R/var/tmp/jobber-disk"
    mount -t ext4 /dev/vda "$R/var/tmp/jobber-disk" || die "cannot mount /dev/vda"
    chmod 1777 "$R/var/tmp/jobber-disk"
fi

mkdir -p "$R/run/cgv2-vm"
mount --bind /ci "$R/run/cgv2-vm"
hostname cgv2-vm
ip link set lo up || log "cannot bring up lo"

log "kernel $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) MiB," \
    "cgroup.controllers: $(cat "$R/sys/fs/cgroup/cgroup.controllers")"
if [ -n "$SYSTEMD" ]; then
    mkdir -p "$R/run/systemd/system"
    # The unit's script (not inline in ExecStart=, where systemd would expand $VARIABLES).
    cat >"$R/run/cgv2-vm-unit.sh" <<'EOF'
up() { cut -d' ' -f1 /proc/uptime; }
/usr/bin/env -i /usr/bin/bash /run/cgv2-vm/run.sh
rc=$?
echo "[vm] command exit code $rc at uptime $(up)s"
echo "$rc" >/run/cgv2-vm/rc
sync
systemctl poweroff -ff
EOF
    # No default dependencies: a failing sysinit unit must not keep the command from running
    # (failed units are listed after it).  Type=exec, not oneshot: the unit is active once the
    # script runs, so the boot is finished (is-system-running: running) as on a live host.
    # Failure/SuccessAction: power off even if the script dies before its `systemctl poweroff`.
    cat >"$R/run/systemd/system/cgv2-vm.service" <<'EOF'
[Unit]
Description=cgv2-vm command
DefaultDependencies=no
Wants=sysinit.target dbus.socket systemd-logind.service
After=sysinit.target basic.target dbus.socket systemd-logind.service
Conflicts=shutdown.target
Before=shutdown.target
SuccessAction=poweroff-immediate
FailureAction=poweroff-immediate
[Service]
Type=exec
ExecStart=/usr/bin/bash /run/cgv2-vm-unit.sh
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
EOF
    log "exec systemd at uptime $(uptime_s)s"
    # switch_root: the tmpfs becomes / (systemd wants a real root, not a chroot in rootfs).
    # (systemd.unit=cgv2-vm.service is on the kernel command line: systemd reads it there.)
    exec switch_root "$R" /lib/systemd/systemd
    die "cannot exec systemd"
fi
log "running the command at uptime $(uptime_s)s"
# A clean environment: run.sh exports what the host forwarded, cds into the checkout, runs it.
chroot "$R" /usr/bin/env -i /usr/bin/bash /run/cgv2-vm/run.sh
rc=$?
log "command exit code $rc at uptime $(uptime_s)s"
echo "$rc" > /ci/rc
sync
poweroff -f
