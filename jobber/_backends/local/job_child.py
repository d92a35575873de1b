"""The job's side of a start: what the supervisor's forked child does before it execs the
command (both launchers do the same; ``launcher.c`` is the compiled one).

It joins the job's cgroups, sets its limits, points its output at the log, makes the mount
namespace a tenant's job gets (a private /tmp, a /proc and cgroupfs showing only its own
processes), drops to the job's uid, and execs ``/bin/sh -c COMMAND`` with the environment
the launch-env file gave. Runs in a single-threaded process, so it is safe between fork and
exec. Standard library only, like the rest of the supervisor island; ctypes is imported
only by the functions a namespace or no-new-privs needs, so a job's finishing half never
pays for it.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import stat

# A command longer than this reaches the shell on descriptor 9, not as an argument (one
# string of argv is at most 128 KiB); launcher.c has the same constants.
INLINE_MAX = 65536
COMMAND_FD = 9
FROM_FD = 'eval "$(/bin/cat <&9)" 9<&-'

_CLONE_NEWNS, _CLONE_NEWUSER = 0x00020000, 0x10000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE, _MS_SLAVE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18, 1 << 19)
_PR_SET_NO_NEW_PRIVS = 38
# Set by the warm launcher (``warm.py``): runs the command in this process instead of
# exec'ing it when it is a function job's runner line (then never returns), else returns.
in_process = None


def read_command(path: str) -> tuple[str | None, int]:
    """The command file (opened with O_NOFOLLOW): (its text, -1) when short enough for
    argv, else (None, an open descriptor at its start)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        if st.st_size > INLINE_MAX:
            return None, fd
        data = b""
        while len(data) < st.st_size and (chunk := os.read(fd, st.st_size - len(data))):
            data += chunk
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return os.fsdecode(data), -1


def read_env_file(path: str) -> list[str]:
    """The job's environment (``NAME=VALUE`` entries, each ended by a NUL), then unlinked.

    Only a file of this user that nobody else may read is used (as launcher.c does): the
    values are secrets, and a file planted in its place would choose the job's environment.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            me = os.geteuid()
            why = ("it is not a regular file" if not stat.S_ISREG(st.st_mode) else
                   f"it is owned by uid {st.st_uid}, not by uid {me} (this launcher's)" if st.st_uid != me else
                   f"others may read or write it (mode {stat.S_IMODE(st.st_mode):04o}, not 0600)")
            raise PermissionError(f"refusing the environment file {path}: {why}; it must be a regular file of uid {me} "
                                  "with mode 0600 (jobber writes it so: if something replaced it, start the job again)")
        os.unlink(path)
        data = b""
        while chunk := os.read(fd, 1 << 20):
            data += chunk
    finally:
        os.close(fd)
    return [os.fsdecode(entry) for entry in data.split(b"\0") if entry]


def _libc():
    import ctypes  # only for jobs that ask for these: the finishing half never pays for it

    return ctypes, ctypes.CDLL(None, use_errno=True)


def private_mounts(tmp_dir: str | None, hide_pids: bool, hide_cgroups: list[str] | tuple[()] = (),
                    joins: list[str] | tuple[()] = ()) -> None:
    """As root, in the child: a mount namespace of its own, with ``tmp_dir`` on /tmp and/or
    a /proc that shows only the processes of the job's uid, and each cgroup hierarchy of
    ``hide_cgroups`` hidden but for the job's own cgroup (as launcher.c does)."""
    ctypes, libc = _libc()

    def check(result: int, what: str) -> None:
        if result != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def hide(tops) -> None:
        # cgroup.procs and tasks are world-readable and list every pid of the host: an
        # empty read-only tmpfs over each hierarchy, the job's own cgroup bound back read-only.
        own = {os.path.dirname(procs): os.open(os.path.dirname(procs), os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW
                                               | os.O_CLOEXEC) for procs in joins}
        sealed = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
        for top in tops:
            check(libc.mount(b"tmpfs", top.encode(), b"tmpfs", sealed, b"mode=0755"),
                  f"cannot hide the cgroup hierarchy {top}")
            for path, fd in own.items():
                if path.startswith(top + "/"):
                    here = top
                    for part in path[len(top) + 1:].split("/"):
                        here = os.path.join(here, part)
                        if not os.path.isdir(here):
                            os.mkdir(here)
                            os.chmod(here, 0o755)  # the umask is still the server's here
                    check(libc.mount(f"/proc/self/fd/{fd}".encode(), path.encode(), None, _MS_BIND, None),
                          f"cannot bind the job's cgroup {path}")
                    check(libc.mount(None, path.encode(), None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | sealed, None),
                          f"cannot remount {path} read-only")
            check(libc.mount(None, top.encode(), None, _MS_REMOUNT | _MS_RDONLY | sealed, b"mode=0755"),
                  f"cannot remount {top} read-only")
        for fd in own.values():
            os.close(fd)

    check(libc.unshare(_CLONE_NEWNS), "unshare CLONE_NEWNS")
    check(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "mount --make-rprivate /")
    if tmp_dir is not None:
        fd = os.open(tmp_dir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        check(libc.mount(f"/proc/self/fd/{fd}".encode(), b"/tmp", None, _MS_BIND, None),
              f"cannot mount {tmp_dir} on /tmp")
        check(libc.mount(None, b"/tmp", None, _MS_REMOUNT | _MS_BIND | _MS_NOSUID | _MS_NODEV, None),
              "cannot remount /tmp nosuid,nodev")
        os.close(fd)
    if hide_cgroups:
        hide(hide_cgroups)
    if hide_pids:
        check(libc.mount(b"proc", b"/proc", b"proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, b"hidepid=2"),
              "cannot mount /proc hidepid=2")


def hide_devices(paths: list[str], cover: str) -> None:
    """As the job's own user, in the child: each device node in ``paths`` covered by the
    empty file ``cover``, in a user and mount namespace of the job's own (``device_cover``;
    as launcher.c does)."""
    ctypes, libc = _libc()
    uid, gid = os.geteuid(), os.getegid()
    try:
        os.mknod(cover, stat.S_IFREG)  # an empty regular file of mode 0
    except FileExistsError:
        pass  # a retry's
    st = os.lstat(cover)
    if not stat.S_ISREG(st.st_mode) or st.st_size:
        raise OSError(errno.EINVAL, f"{cover} is not an empty file")
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare CLONE_NEWUSER|CLONE_NEWNS: {os.strerror(err)}")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as file:
            file.write(text)
    for target, source, flags, what in [(b"/", None, _MS_REC | _MS_SLAVE, "mount --make-rslave /"),
                                        *((os.fsencode(p), os.fsencode(cover), _MS_BIND,
                                           f"cannot cover the device node {p}") for p in paths)]:
        if libc.mount(source, target, None, flags, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")


def _no_new_privs() -> None:
    ctypes, libc = _libc()
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl PR_SET_NO_NEW_PRIVS: {os.strerror(err)}")


def child(plan: dict, log_fd: int, error_fd: int, command: str | None, command_fd: int) -> None:
    """In the forked child: confine, redirect, exec. Never returns."""
    try:
        for procs in plan["join"]:
            with open(procs, "w") as f:
                f.write("0")  # "0" moves the writing process itself
        if plan["pgid"]:
            os.setpgid(0, 0)
        for spec in plan["rlimit"]:
            name, value = spec.split("=")
            soft, _, hard = value.partition(":")
            resource.setrlimit(getattr(resource, name), (int(soft), int(hard or soft)))
        # Not inheritable (os.open's default, said here): the job gets it as 0 only,
        # not a stray copy too; when open returns 0 itself, 0 is made inheritable.
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        if devnull == 0:
            os.set_inheritable(0, True)
        else:
            os.dup2(devnull, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        if plan["private_tmp"] is not None or plan["hide_pids"] or plan["hide_cgroup"]:
            private_mounts(plan["private_tmp"], plan["hide_pids"], plan["hide_cgroup"], plan["join"])
        if plan["hide_device"]:
            hide_devices(plan["hide_device"], plan["device_cover"])
        if plan["gid"] is not None:
            os.setgroups([])
            os.setgid(plan["gid"])
        if plan["uid"] is not None:
            os.setuid(plan["uid"])
        if plan["no_new_privs"]:
            _no_new_privs()
        if plan["umask"] is not None:
            os.umask(plan["umask"])
        os.chdir(plan["cwd"])
        env = {} if plan["clear_env"] else dict(os.environ)
        env.update(item.split("=", 1) for item in plan["env"])
        if command is None:
            # The shell reads the command on descriptor 9 (dash takes one digit).
            if error_fd == COMMAND_FD:
                error_fd = os.dup(error_fd)  # close-on-exec, like the original
            os.dup2(command_fd, COMMAND_FD)
            os.set_inheritable(COMMAND_FD, True)  # dup2 onto itself keeps close-on-exec
            command = FROM_FD
        if in_process is not None and command is not None:
            in_process(command, env, error_fd)  # the warm launcher runs a function job here
        os.execve("/bin/sh", ["sh", "-c", command], env)
    except BaseException as err:  # noqa: BLE001 - anything here must reach the starter
        os.write(error_fd, f"{err}".encode(errors="replace"))
    finally:
        os._exit(127)
