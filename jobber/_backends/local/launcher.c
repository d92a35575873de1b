/*
 * jobber's launcher: the small resident half of a job's supervisor.
 *
 * A Python supervisor costs ~40 ms to start and ~6 MB per running job; this costs ~1 ms
 * and ~0.1 MB. It starts the job and waits for it; when the job's main process ends it
 * execs the Python half (supervisor.py --finish), which kills leftovers, reads the
 * cgroup's totals, removes the cgroup and records the outcome. jobber compiles this file
 * on first use (see launcher_build.py) and falls back to the pure-Python supervisor without
 * a C compiler.
 *
 * usage: launcher JOB_DIR PYTHON SUPERVISOR_PY [--join FILE]... [--into CGROUP_DIR]
 *                 [--rlimit NAME=N|NAME=SOFT:HARD]... [--pgid] [--uid N --gid N] [--cwd DIR]
 *                 [--clear-env] [--env-file FILE] [--umask OCTAL] [--no-new-privs]
 *                 [--private-tmp DIR] [--hide-pids] [--hide-cgroup MOUNT]...
 *                 [--hide-device PATH... --device-cover FILE]
 *                 [--usage KIND=PATH]... (--command-file FILE | -- COMMAND)
 *
 * --timeout SECONDS [--grace SECONDS]: measured from the start by this process (so it holds
 * with no kernel alive), then the Python half runs `supervisor.py --time-out`, which marks
 * the job timed out and stops its whole cgroup (SIGTERM, SIGKILL after the grace).
 *
 * --log-max BYTES: while the job runs, this process keeps the log under the cap (its head
 * and its newest bytes, the middle punched out: see struct log_cap); --finish gets the
 * cap too, for the last trim once nothing writes any more. With or without a cap, the
 * log stops short of filling its filesystem (cap_stop_if_full).
 *
 * --into (cgroup v2): the job's process is created inside that cgroup with
 * clone3(CLONE_INTO_CGROUP) (Linux 5.7), so it never has to migrate; where the kernel
 * lacks it, the child joins by writing to cgroup.procs (--join) as on cgroup v1.
 *
 * --command-file (what the backend passes): the command is read from FILE, opened with
 * O_NOFOLLOW, so no argument limit applies to it. Up to INLINE_MAX bytes it runs as
 * `sh -c COMMAND`; a longer one is handed to the shell on descriptor 9 and run by
 * `sh -c 'eval "$(/bin/cat <&9)" 9<&-'` (one string of argv or environ is at most 128 KiB).
 *
 * --env-file FILE: the job's environment, NAME=VALUE entries each ended by a NUL. Never on
 * the command line, which every local user can read in /proc/PID/cmdline while the job
 * runs: the values are secrets. Used only if it is ours and nobody else's to read (a
 * file planted in its place would choose the job's environment); unlinked once read.
 *
 * What a jobber server adds for a tenant's job: --clear-env (nothing of the starter's
 * environment, only the --env-file's), --umask, --no-new-privs (prctl), --rlimit
 * RLIMIT_NOFILE=SOFT:HARD, and a mount namespace of the job's own (--private-tmp: DIR
 * bound on /tmp; --hide-pids: a /proc mounted hidepid=2, showing only the job user's
 * processes; --hide-cgroup: each cgroup hierarchy hidden but for the job's own cgroup),
 * all made as root before the uid is dropped.
 *
 * --hide-device PATH --device-cover FILE (an ordinary user's job on cgroup v2, where a BPF
 * device program needs privileges the user lacks; see device_cover.py): a user namespace
 * mapping the job's own uid and gid alone, and a mount namespace in which FILE (empty,
 * mode 0) is bound over each PATH. The command runs without capabilities, so it cannot
 * undo them, and in a namespace it makes itself they are locked.
 *
 * The watchdog: a dead supervisor must not leave its job running unlimited (no timeout, no
 * log cap) until someone happens to read its status. Once the job's exec succeeded, and
 * before its status says "running", this process forks a watchdog (outside the job's
 * cgroup, ~0.1 MB) that blocks reading a pipe whose only write end this process holds:
 * made after the job's fork, so the job never has it; kept across the exec of
 * the Python half (--watchdog-fd), which writes one byte once the outcome is recorded (or
 * the next attempt has its own supervisor). EOF without that byte means the supervisor
 * died: the watchdog execs reap.py, which kills the job, removes its cgroup and records
 * it "failed" with a note, as a status read would have.
 *
 * Nothing in the job directory is followed if it is a symlink: log, pid and status.json
 * (temporary file, then rename) and the command file are opened with O_NOFOLLOW.
 *
 * Protocol with the starter, on stdout: "ok PID\n" once the command was exec'd inside its
 * cgroup, or "error MESSAGE\n" (written by the Python half for a failed exec).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <poll.h>
#include <linux/falloc.h>
#include <sys/signalfd.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <linux/sched.h>

/* A --timeout this long (s) is never reached (and past 2^63 ns it would not fit): none. */
#define TIMEOUT_NEVER_S 9e9
/* Commands longer than this go to the shell on a descriptor, not as an argument. */
#define INLINE_MAX 65536
#define COMMAND_FD 9
#define FROM_FD "eval \"$(/bin/cat <&9)\" 9<&-"

static char **joins, **envs, **rlimits, **hides, **devices;
static int njoins, nenvs, nrlimits, nhides, ndevices;

static void die(const char *what) {
    dprintf(1, "error launcher: %s: %s\n", what, strerror(errno));
    _exit(1);
}

/* Tell the Python half (or the starter) why the child failed, then leave. */
static void child_fail(int fd, const char *what, const char *arg) {
    dprintf(fd, "%s %s: %s", what, arg ? arg : "", strerror(errno));
    _exit(127);
}

/* fork(), but with the child born in the cgroup open at dirfd; -1 with errno when the
 * kernel cannot (then the caller forks and the child joins by cgroup.procs). */
static pid_t fork_into(int dirfd) {
#if defined(SYS_clone3) && defined(CLONE_INTO_CGROUP)
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_INTO_CGROUP;
    args.exit_signal = SIGCHLD;
    args.cgroup = (unsigned long long)dirfd;
    return (pid_t)syscall(SYS_clone3, &args, sizeof args);
#else
    (void)dirfd;
    errno = ENOSYS;
    return -1;
#endif
}

/* The log cap (--log-max): past it the log keeps its first H bytes and its newest cap/2,
 * and the bytes between are punched out of the file (FALLOC_FL_PUNCH_HOLE|KEEP_SIZE), so
 * no offset ever moves and the job keeps writing straight to the file (O_APPEND, no pipe,
 * no copy). Readers find the cut from the file alone (SEEK_HOLE/SEEK_DATA: logcut.py);
 * supervisor.py does the same for the Python launcher and the last trim in --finish. */
struct log_cap {
    int fd;                 /* the log, open for writing */
    long long max;          /* bytes; 0: no cap */
    long long block;        /* st_blksize: holes are whole blocks */
    long long head;         /* H: the bytes kept from the start, cap/2 in whole blocks */
    long long resume;       /* P: where the kept tail starts (H until the first cut) */
    long long slack;        /* how far the tail may grow past cap/2 before the next cut */
    long long last_size;
    long long last_used;    /* st_blocks in bytes at the last look */
    long long headroom;     /* the free space the log leaves its filesystem (0: unknown) */
    long long free_bytes;   /* the free space when the log stopped */
    int active;             /* 0 once the filesystem cannot punch holes: nothing to do */
    int stopped;            /* the filesystem was nearly full: later output is dropped */
    const char *job_dir;
};

#define CAP_CHECK_NS 2000000LL  /* at most one fstat every 2 ms, however fast the writer */
#define CAP_POLL_MAX_MS 250     /* without a change notice: the slowest periodic look */

/* The log stops short of filling its filesystem: it leaves 2% free, from 1 to 256 MiB
 * (logcap.headroom has the same rule). Past that, what the log holds is kept and what
 * the job writes after is punched out as it comes (the file says so in log-stopped). */
#define MIB (1LL << 20)

static void cap_init(struct log_cap *cap, int fd, long long max, const char *job_dir) {
    struct stat st;
    struct statvfs fs;
    cap->fd = fd;
    cap->max = max > 0 ? max : 0;
    cap->block = fstat(fd, &st) == 0 && st.st_blksize > 0 ? st.st_blksize : 4096;
    cap->head = cap->max / 2 / cap->block * cap->block;
    if (cap->head < cap->block) cap->head = cap->block;
    cap->resume = cap->head;
    cap->slack = cap->max / 16 > (1 << 20) ? cap->max / 16 : (1 << 20);
    cap->last_size = 0;
    cap->last_used = 0;
    cap->headroom = cap->free_bytes = 0;
    if (fstatvfs(fd, &fs) == 0) {
        long long total = (long long)fs.f_blocks * (long long)fs.f_frsize;
        cap->headroom = total / 50 < MIB ? MIB : (total / 50 > 256 * MIB ? 256 * MIB : total / 50);
    }
    cap->active = 1;
    cap->stopped = 0;
    cap->job_dir = job_dir;
}

/* A note beside the log, whole or not at all (a full disk leaves no half of one). */
static void write_note(const char *dir, const char *name, const char *text) {
    char path[4096], tmp[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.%d.tmp", dir, name, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return;
    size_t len = strlen(text);
    int ok = write(fd, text, len) == (ssize_t)len;
    if (close(fd) < 0) ok = 0;
    if (!ok || rename(tmp, path) < 0) unlink(tmp);
}

/* Best effort, never fatal: the job must not fail because its log could not be capped. */
static void cap_note(struct log_cap *cap, int err) {
    char text[512];
    snprintf(text, sizeof text, "log_max is not enforced: this filesystem cannot punch holes in the log (%s)\n",
             strerror(err));
    write_note(cap->job_dir, "log-cap-note", text);
}

/* Stop the log when its filesystem has less than the headroom free: what it held at the
 * last look is kept (as its head, unless a cut already made one), and of what it wrote
 * since, up to twice the headroom is given back (a fast writer outruns the looks, and the
 * next job's log needs room before it stops too); later output is dropped. Returns 1 when
 * it stopped the log. */
static int cap_stop_if_full(struct log_cap *cap, long long before, long long size) {
    struct statvfs fs;
    if (!cap->headroom || fstatvfs(cap->fd, &fs) < 0) return 0;
    cap->free_bytes = (long long)fs.f_bavail * (long long)fs.f_frsize;
    if (cap->free_bytes >= cap->headroom) return 0;
    cap->stopped = 1;
    if (cap->resume <= cap->head) {
        long long keep = size - (2 * cap->headroom - cap->free_bytes); /* room for the next job's log */
        if (keep < before) keep = before;
        if (keep < 0) keep = 0;
        cap->head = cap->resume = keep / cap->block * cap->block;
    }
    return 1;
}

/* Written once the space is back: the note needs a block of its own. */
static void cap_note_stopped(struct log_cap *cap, long long size) {
    char text[512];
    snprintf(text, sizeof text,
             "disk full: %.1f MiB was left on the log's filesystem, which keeps %lld MiB free; "
             "the job's output after byte %lld is dropped\n",
             (double)cap->free_bytes / MIB, cap->headroom / MIB, cap->head < size ? cap->head : size);
    write_note(cap->job_dir, "log-stopped", text);
}

/* Punch out what the log holds beyond its head and its newest `keep` bytes, once the tail
 * is `slack` past that or the file holds more blocks than it may.
 *
 * The job holds a writable descriptor of the whole file, so it may truncate it, seek,
 * pwrite or drop O_APPEND: what counts is what the file holds on disk (st_blocks), not
 * its apparent size. A log truncated below the kept tail starts its tail over there; a
 * log holding more blocks than its head and kept tail can (bytes written back into the
 * dropped range) has all of [H, P) punched again. Every punch ends at or below the size
 * just seen, where the job's appends never land (only a job that truncates its own log
 * or pwrites into that range loses what it put there, and it asked for it).
 *
 * Blocks past the end of the file (fallocate KEEP_SIZE, or XFS's speculative
 * preallocation for an honest appender) are left alone while the job runs: a punch there
 * does nothing on ext4, and truncating the file to the size seen would cut whatever the
 * job appended between the fstat and the truncate. The last trim frees them, once nothing
 * writes (trim_log in logcap.py, run by the finisher). */
static void cap_cut(struct log_cap *cap, const struct stat *now, long long keep, long long slack) {
    long long size = now->st_size, used = (long long)now->st_blocks * 512;
    if (size < cap->resume) {
        cap->resume = size / cap->block * cap->block;
        if (cap->resume < cap->head) cap->resume = cap->head;
    }
    long long tail = size > cap->resume ? size - cap->resume : 0;
    int refilled = used > cap->head + tail + slack + 2 * cap->block;
    if (tail <= keep + slack && !refilled) return;
    long long to = (size - keep) / cap->block * cap->block;
    if (to < cap->resume) to = cap->resume;
    long long from = refilled ? cap->head : cap->resume;
    if (to > from && fallocate(cap->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, from, to - from) < 0) {
        /* A full disk can refuse the extent split a punch needs: try again at the next look. */
        if (errno != EINTR && errno != ENOSPC && errno != EDQUOT) {
            cap_note(cap, errno);
            cap->active = 0; /* stop trying: the log grows uncapped, the job goes on */
        }
        return;
    }
    cap->resume = to;
}

/* One look at the log: cut it when its tail has grown past cap/2 + slack (or, stopped, past
 * its head), stop it when its filesystem is nearly full. Returns 1 when the log grew since
 * the last look. */
static int cap_check(struct log_cap *cap) {
    struct stat st;
    if (!cap->active || fstat(cap->fd, &st) < 0) return 0;
    long long used = (long long)st.st_blocks * 512;
    int grew = st.st_size != cap->last_size || used != cap->last_used;
    long long before = cap->last_size;
    cap->last_size = st.st_size;
    cap->last_used = used;
    if (grew && !cap->stopped && cap_stop_if_full(cap, before, st.st_size)) {
        cap_cut(cap, &st, 0, 0); /* first the space back, then the note that says so */
        cap_note_stopped(cap, st.st_size);
        return grew;
    }
    if (!cap->max && !cap->stopped) return grew;
    if (cap->stopped) cap_cut(cap, &st, 0, 0);
    else cap_cut(cap, &st, cap->max / 2, cap->slack);
    return grew;
}

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Has `pid` ended? Without reaping it: wait4 below collects its status and rusage. */
static int ended(pid_t pid) {
    siginfo_t info;
    memset(&info, 0, sizeof info);
    return waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid;
}

/* The usage history (--usage KIND=PATH, jobber/_usage.py has the format and the Python
 * twin): every `interval` the supervise loop reads the job's cgroup files and appends one
 * line "T MEMORY CPU TASKS" to JOB_DIR/usage, so the job's charts outlive the kernel that
 * started it. At USAGE_CAPACITY lines every two neighbours become one (later time and CPU,
 * larger memory and tasks) and the file is rewritten: it stays under ~50 KiB for any run. */
#define USAGE_CAPACITY 1024
#define USAGE_FIRST_NS 500000000LL
#define USAGE_HEADER "# jobber usage 1: seconds-since-start memory-bytes cpu-seconds tasks\n"
struct usage_sample { double t, cpu; long long memory, tasks; }; /* -1: not measured */
static struct {
    char **kinds, **paths;
    int nsources, n, broken;
    long long start_ns, interval_ns, next_ns;
    struct usage_sample *samples;
    const char *job_dir;
} usage_log;

static void usage_add_source(char *spec) {
    char *eq = strchr(spec, '=');
    if (!eq) return;
    *eq = 0;
    usage_log.kinds[usage_log.nsources] = spec;
    usage_log.paths[usage_log.nsources++] = eq + 1;
}

static int usage_active(void) { return usage_log.nsources > 0 && !usage_log.broken; }

static int read_small(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0) return -1;
    buf[n] = 0;
    return 0;
}

static int usage_line(char *out, size_t size, const struct usage_sample *s) {
    char memory[32] = "-", cpu[48] = "-", tasks[32] = "-";
    if (s->memory >= 0) snprintf(memory, sizeof memory, "%lld", s->memory);
    if (s->cpu >= 0) snprintf(cpu, sizeof cpu, "%.6f", s->cpu);
    if (s->tasks >= 0) snprintf(tasks, sizeof tasks, "%lld", s->tasks);
    return snprintf(out, size, "%.3f %s %s %s\n", s->t, memory, cpu, tasks);
}

static int usage_write(const char *name, int flags, const char *text, size_t len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", usage_log.job_dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | flags, 0600);
    if (fd < 0) return -1;
    ssize_t n = write(fd, text, len);
    close(fd);
    return n == (ssize_t)len ? 0 : -1;
}

static long long larger(long long a, long long b) { return a > b ? a : b; }

static void usage_sample(long long now) {
    usage_log.next_ns = now + usage_log.interval_ns;
    struct usage_sample s = {(double)(now - usage_log.start_ns) / 1e9, -1, -1, -1};
    char buf[4096];
    for (int i = 0; i < usage_log.nsources; i++) {
        if (read_small(usage_log.paths[i], buf, sizeof buf) < 0) continue;
        const char *kind = usage_log.kinds[i];
        if (!strcmp(kind, "memory")) s.memory = atoll(buf);
        else if (!strcmp(kind, "tasks")) s.tasks = atoll(buf);
        else if (!strcmp(kind, "cpu-ns")) s.cpu = (double)atoll(buf) / 1e9;
        else if (!strcmp(kind, "cpu-stat")) {
            char *at = strstr(buf, "usage_usec ");
            if (at) s.cpu = (double)atoll(at + 11) / 1e6;
        }
    }
    if (s.memory < 0 && s.cpu < 0 && s.tasks < 0) return; /* the cgroup is gone: the job is ending */
    if (!usage_log.samples && !(usage_log.samples = calloc(USAGE_CAPACITY, sizeof *usage_log.samples))) {
        usage_log.broken = 1;
        return;
    }
    usage_log.samples[usage_log.n++] = s;
    char line[256];
    if (usage_log.n < USAGE_CAPACITY) {
        int len = 0;
        if (usage_log.n == 1) len = snprintf(line, sizeof line, "%s", USAGE_HEADER);
        len += usage_line(line + len, sizeof line - (size_t)len, &s);
        if (usage_write("usage", O_APPEND, line, (size_t)len) < 0) usage_log.broken = 1;
        return;
    }
    int m = 0;
    for (int i = 0; i + 1 < usage_log.n; i += 2) {
        struct usage_sample a = usage_log.samples[i], b = usage_log.samples[i + 1];
        usage_log.samples[m++] = (struct usage_sample){b.t, b.cpu >= 0 ? b.cpu : a.cpu, larger(a.memory, b.memory),
                                                   larger(a.tasks, b.tasks)};
    }
    if (usage_log.n % 2) usage_log.samples[m++] = usage_log.samples[usage_log.n - 1];
    usage_log.n = m;
    usage_log.interval_ns *= 2;
    size_t size = sizeof USAGE_HEADER + (size_t)usage_log.n * 128, len = 0;
    char *text = malloc(size);
    if (!text) { usage_log.broken = 1; return; }
    len += (size_t)snprintf(text, size, "%s", USAGE_HEADER);
    for (int i = 0; i < usage_log.n; i++) len += (size_t)usage_line(text + len, size - len, &usage_log.samples[i]);
    char from[4096], to[4096];
    snprintf(from, sizeof from, "%s/usage_log.tmp", usage_log.job_dir);
    snprintf(to, sizeof to, "%s/usage", usage_log.job_dir);
    if (usage_write("usage_log.tmp", O_TRUNC, text, len) < 0 || rename(from, to) < 0) usage_log.broken = 1;
    free(text);
}

/* The resident wait: until `pid` ends, keep the log under its cap and, with seconds >= 0,
 * return 1 once the time is up (0 when the job ended). One poll() holds the pidfd, the
 * timeout and a one-shot change notice on the job directory: a write to the log wakes
 * us once, then we look at most every CAP_CHECK_NS and re-arm, so a fast writer costs one
 * notice per look and an idle job costs nothing. The notice is dnotify (F_NOTIFY
 * DN_MODIFY, its SIGIO read from a signalfd), not inotify: every inotify instance counts
 * against fs.inotify.max_user_instances (128 by default), which the user's own followers
 * need, and a supervisor per running job would use them up. Without pidfd_open the end
 * is polled with waitid(WNOWAIT); without the notice the log is looked at periodically. */
static int supervise(pid_t pid, double seconds, struct log_cap *cap) {
    int pfd = -1, sfd = -1, dirfd = -1, armed = 0;
    if (seconds < 0 && !cap->active && !usage_active()) return 0; /* nothing to do here: wait4 waits */
#ifdef SYS_pidfd_open
    pfd = (int)syscall(SYS_pidfd_open, pid, 0);
#endif
    sigset_t sigio, old_mask;
    sigemptyset(&sigio);
    sigaddset(&sigio, SIGIO);
    sigprocmask(SIG_SETMASK, NULL, &old_mask);
    if (cap->active && sigprocmask(SIG_BLOCK, &sigio, NULL) == 0) {
        sfd = signalfd(-1, &sigio, SFD_NONBLOCK | SFD_CLOEXEC);
        dirfd = sfd >= 0 ? open(cap->job_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    }
    int notify = sfd >= 0 && dirfd >= 0;
    long long start = now_ns(), last_look = start - CAP_CHECK_NS;
    int interval_ms = 2;
    int result = 0;
    for (;;) {
        long long now = now_ns();
        if (seconds >= 0 && now - start >= (long long)(seconds * 1e9)) { result = 1; break; }
        long long wake_ms = -1; /* poll's timeout: -1 is none */
        if (cap->active && notify && !armed) {
            if (now - last_look >= CAP_CHECK_NS) {
                /* Arm first, then look: a write after the look always wakes us. */
                if (fcntl(dirfd, F_NOTIFY, DN_MODIFY) < 0) notify = 0;
                else armed = 1;
                cap_check(cap);
                last_look = now;
            } else {
                wake_ms = (CAP_CHECK_NS - (now - last_look)) / 1000000 + 1;
            }
        }
        if (cap->active && !notify) {
            if (now - last_look >= (long long)interval_ms * 1000000LL) {
                int grew = cap_check(cap);
                last_look = now;
                interval_ms = grew ? 2 : (interval_ms * 2 > CAP_POLL_MAX_MS ? CAP_POLL_MAX_MS : interval_ms * 2);
            }
            long long until = (last_look + (long long)interval_ms * 1000000LL - now) / 1000000 + 1;
            if (wake_ms < 0 || until < wake_ms) wake_ms = until;
        }
        if (usage_active()) {
            if (now >= usage_log.next_ns) usage_sample(now);
            long long until = (usage_log.next_ns - now) / 1000000 + 1;
            if (until < 1) until = 1;
            if (wake_ms < 0 || until < wake_ms) wake_ms = until;
        }
        if (pfd < 0 && (wake_ms < 0 || wake_ms > 50)) wake_ms = 50;
        if (seconds >= 0) {
            long long left = ((long long)(seconds * 1e9) - (now - start)) / 1000000 + 1;
            if (left > 3600000) left = 3600000;
            if (wake_ms < 0 || left < wake_ms) wake_ms = left;
        }
        struct pollfd fds[2];
        int nfds = 0, pi = -1, si = -1;
        if (pfd >= 0) { fds[nfds] = (struct pollfd){pfd, POLLIN, 0}; pi = nfds++; }
        if (notify && armed) { fds[nfds] = (struct pollfd){sfd, POLLIN, 0}; si = nfds++; }
        if (!nfds && wake_ms < 0) break; /* cannot happen: there is always a reason to wake */
        int r = poll(fds, (nfds_t)nfds, (int)wake_ms);
        if (r < 0 && errno != EINTR) break;
        if (r > 0 && pi >= 0 && fds[pi].revents) break;
        if (pfd < 0 && ended(pid)) break;
        if (r > 0 && si >= 0 && fds[si].revents) {
            struct signalfd_siginfo info;
            while (read(sfd, &info, sizeof info) > 0) {}
            armed = 0; /* the one-shot notice fired (and is gone): look, at the next 2 ms mark */
        }
    }
    if (pfd >= 0) close(pfd);
    if (dirfd >= 0) close(dirfd); /* ends the notice: no SIGIO comes after this */
    if (sfd >= 0) {
        struct signalfd_siginfo info;
        while (read(sfd, &info, sizeof info) > 0) {} /* one already pending is taken here */
        close(sfd);
    }
    sigprocmask(SIG_SETMASK, &old_mask, NULL);
    return result;
}

/* NAME=N (soft and hard) or NAME=SOFT:HARD. */
static int set_rlimit(const char *spec) {
    const char *eq = strchr(spec, '=');
    if (!eq) { errno = EINVAL; return -1; }
    char *end;
    rlim_t soft = strtoull(eq + 1, &end, 10), hard = soft;
    if (*end == ':') hard = strtoull(end + 1, &end, 10);
    if (*end) { errno = EINVAL; return -1; }
    struct rlimit lim = {soft, hard};
    if (!strncmp(spec, "RLIMIT_AS=", 10)) return setrlimit(RLIMIT_AS, &lim);
    if (!strncmp(spec, "RLIMIT_NPROC=", 13)) return setrlimit(RLIMIT_NPROC, &lim);
    if (!strncmp(spec, "RLIMIT_NOFILE=", 14)) return setrlimit(RLIMIT_NOFILE, &lim);
    errno = EINVAL;
    return -1;
}

/* --hide-cgroup MOUNT: hidepid=2 says nothing of cgroupfs, whose cgroup.procs and tasks
 * files are world-readable and list every pid of the host. Each cgroup hierarchy MOUNT
 * gets an empty read-only tmpfs over it, and the job's own cgroup there (the directory of
 * a --join file beneath MOUNT) is bound back, read-only, at its own path: the job reads
 * its limits and counters as before, lists only its own pids, and can make no cgroup. */
static void hide_cgroups(int err) {
    int *fds = calloc((size_t)njoins + 1, sizeof *fds);
    if (!fds) child_fail(err, "calloc", NULL);
    for (int i = 0; i < njoins; i++) { /* opened first: a later tmpfs may cover them */
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", joins[i]);
        if (strrchr(dir, '/')) *strrchr(dir, '/') = 0;
        if ((fds[i] = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
            child_fail(err, "cannot open the job's cgroup", dir);
    }
    for (int m = 0; m < nhides; m++) {
        const char *top = hides[m];
        size_t len = strlen(top);
        if (mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755") < 0)
            child_fail(err, "cannot hide the cgroup hierarchy", top);
        for (int i = 0; i < njoins; i++) {
            if (strncmp(joins[i], top, len) || joins[i][len] != '/') continue;
            char target[4096], source[64];
            snprintf(target, sizeof target, "%s", joins[i]);
            *strrchr(target, '/') = 0;
            for (char *p = target + len + 1;; p++) { /* mkdir -p, in the fresh tmpfs */
                char *slash = strchr(p, '/');
                if (slash) *slash = 0;
                if (mkdir(target, 0755) < 0 && errno != EEXIST) child_fail(err, "mkdir", target);
                if (chmod(target, 0755) < 0) child_fail(err, "chmod", target); /* the umask is the server's */
                if (!slash) break;
                *slash = '/';
                p = slash;
            }
            snprintf(source, sizeof source, "/proc/self/fd/%d", fds[i]);
            if (mount(source, target, NULL, MS_BIND, NULL) < 0 ||
                mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
                child_fail(err, "cannot bind the job's cgroup", target);
        }
        if (mount(NULL, top, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755") < 0)
            child_fail(err, "cannot remount read-only", top);
    }
    for (int i = 0; i < njoins; i++) close(fds[i]);
    free(fds);
}

/* In the child, as root: a mount namespace of its own, with DIR on /tmp and/or a /proc
 * that shows only the processes of the job's uid, and cgroupfs hidden likewise (--hide-cgroup).
 * Nothing propagates back to the host. */
static void private_mounts(int err, const char *tmp_dir, int hide_pids) {
    if (unshare(CLONE_NEWNS) < 0) child_fail(err, "unshare", "CLONE_NEWNS");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) child_fail(err, "mount", "--make-rprivate /");
    if (tmp_dir) {
        /* Bound through the descriptor: a symlink in DIR's place is refused, never followed. */
        int fd = open(tmp_dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) child_fail(err, "cannot open the private /tmp", tmp_dir);
        char source[64];
        snprintf(source, sizeof source, "/proc/self/fd/%d", fd);
        if (mount(source, "/tmp", NULL, MS_BIND, NULL) < 0) child_fail(err, "cannot mount on /tmp", tmp_dir);
        if (mount(NULL, "/tmp", NULL, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV, NULL) < 0)
            child_fail(err, "cannot remount /tmp", "nosuid,nodev");
        close(fd);
    }
    if (nhides) hide_cgroups(err);
    if (hide_pids && mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2") < 0)
        child_fail(err, "cannot mount /proc", "hidepid=2");
}

static void write_proc(int err, const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) child_fail(err, "cannot write", path);
    close(fd);
}

/* In the child, as the job's own (unprivileged) user: --hide-device. */
static void hide_devices(int err, const char *cover) {
    char map[64];
    unsigned uid = (unsigned)geteuid(), gid = (unsigned)getegid();
    struct stat st;
    /* An empty regular file of mode 0 (a retry finds the one it made). */
    if ((mknod(cover, S_IFREG, 0) < 0 && errno != EEXIST) || lstat(cover, &st) < 0) child_fail(err, "mknod", cover);
    if (!S_ISREG(st.st_mode) || st.st_size) { errno = EINVAL; child_fail(err, "not an empty file", cover); }
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0) child_fail(err, "unshare", "CLONE_NEWUSER|CLONE_NEWNS");
    write_proc(err, "/proc/self/setgroups", "deny"); /* no gid_map for an unprivileged user otherwise */
    snprintf(map, sizeof map, "%u %u 1", uid, uid);
    write_proc(err, "/proc/self/uid_map", map);
    snprintf(map, sizeof map, "%u %u 1", gid, gid);
    write_proc(err, "/proc/self/gid_map", map);
    if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0) child_fail(err, "mount", "--make-rslave /");
    for (int i = 0; i < ndevices; i++)
        if (mount(cover, devices[i], NULL, MS_BIND, NULL) < 0) child_fail(err, "cannot cover the device node", devices[i]);
}

/* The command file: its text when short enough for argv, else NULL and *fd left open. */
static char *read_command(const char *path, int *fd) {
    *fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (*fd < 0) die(path);
    struct stat st;
    if (fstat(*fd, &st) < 0) die(path);
    if (!S_ISREG(st.st_mode)) { errno = EINVAL; die(path); }
    if (st.st_size > INLINE_MAX) return NULL;
    char *text = malloc((size_t)st.st_size + 1);
    if (!text) die("malloc");
    ssize_t got = 0, n;
    while (got < st.st_size && (n = read(*fd, text + got, (size_t)(st.st_size - got))) > 0) got += n;
    if (got != st.st_size) die(path);
    text[got] = 0;
    close(*fd);
    *fd = -1;
    return text;
}

/* --env-file: read it (ours alone, or refused), unlink it, and point envs into it. */
static void read_env_file(const char *path) {
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) die(path);
    struct stat st;
    if (fstat(fd, &st) < 0) die(path);
    /* jobber writes it as this uid with mode 0600: anything else was put in its place. */
    if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077)) {
        char why[128];
        if (!S_ISREG(st.st_mode)) snprintf(why, sizeof why, "it is not a regular file");
        else if (st.st_uid != geteuid())
            snprintf(why, sizeof why, "it is owned by uid %d, not by uid %d (this launcher's)", (int)st.st_uid,
                     (int)geteuid());
        else snprintf(why, sizeof why, "others may read or write it (mode %04o, not 0600)", (unsigned)(st.st_mode & 07777));
        dprintf(1, "error launcher: refusing the environment file %s: %s; it must be a regular file of uid %d "
                   "with mode 0600 (jobber writes it so: if something replaced it, start the job again)\n",
                path, why, (int)geteuid());
        _exit(1);
    }
    if (unlink(path) < 0) die(path);
    char *text = malloc((size_t)st.st_size + 1);
    if (!text) die("malloc");
    ssize_t got = 0, n;
    while (got < st.st_size && (n = read(fd, text + got, (size_t)(st.st_size - got))) > 0) got += n;
    if (got != st.st_size) die(path);
    close(fd);
    text[got] = 0;
    int count = 0;
    for (ssize_t i = 0; i < got; i++) count += text[i] == 0;
    envs = calloc((size_t)count + 1, sizeof *envs);
    if (!envs) die("calloc");
    for (char *p = text; p < text + got; p += strlen(p) + 1)
        if (*p) envs[nenvs++] = p;
}

static long long start_ticks(void) {
    char buf[2048];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0) close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    /* field 22 (starttime) is the 20th after the command name */
    for (int field = 0; p && field < 20; field++) p = strchr(p + 1, ' ');
    return p ? atoll(p + 1) : -1;
}

/* Replace dir/name with data, whole or not at all. 0, or -1 with errno and the path that
 * failed in `failed` (the caller decides: after the job's fork, it must not just die). */
static int write_file(const char *dir, const char *name, const char *data, char *failed, size_t failed_size) {
    char path[4096], tmp[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.%d.tmp", dir, name, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) { snprintf(failed, failed_size, "%s", tmp); return -1; }
    size_t len = strlen(data);
    errno = 0; /* a short write sets none: not a stale one from before */
    int ok = write(fd, data, len) == (ssize_t)len;
    if (!ok && errno == 0) errno = ENOSPC; /* a short write: the disk filled up */
    int err = errno;
    if (close(fd) < 0 && ok) { ok = 0; err = errno; }
    if (!ok) {
        unlink(tmp); /* a full disk leaves no half-written file */
        errno = err;
        snprintf(failed, failed_size, "%s", tmp);
        return -1;
    }
    if (rename(tmp, path) < 0) {
        int err = errno;
        unlink(tmp);
        errno = err;
        snprintf(failed, failed_size, "%s", path);
        return -1;
    }
    return 0;
}

/* The watchdog's whole life: wait for the supervisor's byte, or for EOF when it died. */
static void watchdog(int fd, char *const reap_argv[]) {
    int devnull = open("/dev/null", O_RDWR);
    /* Not the starter's pipes: its read of the launcher's answer waits for their EOF. */
    if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 || dup2(devnull, 2) < 0) _exit(1);
    /* Nothing else of the supervisor's either (the log): only the pipe, as descriptor 3. */
    if (fd != 3 && dup2(fd, 3) < 0) _exit(1);
    fd = 3;
    for (int other = 4; other < 1024; other++) close(other);
    char done;
    ssize_t n;
    while ((n = read(fd, &done, 1)) < 0 && errno == EINTR) {}
    if (n == 1) _exit(0); /* the supervisor saw it through */
    execv(reap_argv[0], reap_argv);
    _exit(127);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: launcher JOB_DIR PYTHON SUPERVISOR_PY [options] -- COMMAND\n");
        return 2;
    }
    const char *job_dir = argv[1], *python = argv[2], *supervisor = argv[3];
    const char *cwd = "/", *command = NULL, *command_file = NULL, *into = NULL, *private_tmp = NULL;
    const char *timeout = NULL, *grace = "5", *log_max = NULL, *env_file = NULL, *cover = NULL;
    int pgid = 0, clear_env = 0, no_new_privs = 0, hide_pids = 0;
    long uid = -1, gid = -1, mask = -1;
    joins = calloc((size_t)argc, sizeof *joins);
    rlimits = calloc((size_t)argc, sizeof *rlimits);
    hides = calloc((size_t)argc, sizeof *hides);
    devices = calloc((size_t)argc, sizeof *devices);
    usage_log.kinds = calloc((size_t)argc, sizeof *usage_log.kinds);
    usage_log.paths = calloc((size_t)argc, sizeof *usage_log.paths);
    usage_log.job_dir = job_dir;
    if (!joins || !rlimits || !hides || !devices || !usage_log.kinds || !usage_log.paths) { fprintf(stderr, "launcher: out of memory\n"); return 2; }
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--") && i + 1 < argc) { command = argv[i + 1]; break; }
        if (!strcmp(argv[i], "--pgid")) { pgid = 1; continue; }
        if (!strcmp(argv[i], "--clear-env")) { clear_env = 1; continue; }
        if (!strcmp(argv[i], "--no-new-privs")) { no_new_privs = 1; continue; }
        if (!strcmp(argv[i], "--hide-pids")) { hide_pids = 1; continue; }
        if (i + 1 >= argc) { fprintf(stderr, "launcher: %s needs a value\n", argv[i]); return 2; }
        if (!strcmp(argv[i], "--join")) joins[njoins++] = argv[++i];
        else if (!strcmp(argv[i], "--env-file")) env_file = argv[++i];
        else if (!strcmp(argv[i], "--rlimit")) rlimits[nrlimits++] = argv[++i];
        else if (!strcmp(argv[i], "--hide-cgroup")) hides[nhides++] = argv[++i];
        else if (!strcmp(argv[i], "--hide-device")) devices[ndevices++] = argv[++i];
        else if (!strcmp(argv[i], "--device-cover")) cover = argv[++i];
        else if (!strcmp(argv[i], "--uid")) uid = atol(argv[++i]);
        else if (!strcmp(argv[i], "--gid")) gid = atol(argv[++i]);
        else if (!strcmp(argv[i], "--umask")) mask = strtol(argv[++i], NULL, 8);
        else if (!strcmp(argv[i], "--cwd")) cwd = argv[++i];
        else if (!strcmp(argv[i], "--into")) into = argv[++i];
        else if (!strcmp(argv[i], "--private-tmp")) private_tmp = argv[++i];
        else if (!strcmp(argv[i], "--command-file")) command_file = argv[++i];
        else if (!strcmp(argv[i], "--timeout")) timeout = argv[++i];
        else if (!strcmp(argv[i], "--grace")) grace = argv[++i];
        else if (!strcmp(argv[i], "--log-max")) log_max = argv[++i];
        else if (!strcmp(argv[i], "--usage")) usage_add_source(argv[++i]);
        else { fprintf(stderr, "launcher: unknown option %s\n", argv[i]); return 2; }
    }
    if (!command && !command_file) { fprintf(stderr, "launcher: no --command-file, and no command after --\n"); return 2; }
    if (ndevices && !cover) { fprintf(stderr, "launcher: --hide-device needs --device-cover\n"); return 2; }
    double limit = -1; /* seconds; -1: none */
    if (timeout) {
        char *end;
        limit = strtod(timeout, &end);
        if (end == timeout || *end || !(limit > 0)) { /* !(> 0) also refuses NaN */
            dprintf(1, "error launcher: --timeout %s is not a positive number of seconds\n", timeout);
            return 1;
        }
        if (limit >= TIMEOUT_NEVER_S) limit = -1;
    }

    /* Double fork: the starter reaps this process at once; the supervisor is nobody's child. */
    pid_t first = fork();
    if (first < 0) die("fork");
    if (first > 0) _exit(0);
    signal(SIGHUP, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);

    /* Exactly once per attempt: the first launcher takes the gate (O_EXCL) and names itself
     * in it, so a starter that died mid-start can tell "on its way" from "never came". */
    char gate[4096];
    snprintf(gate, sizeof gate, "%s/launched", job_dir);
    int gate_fd = open(gate, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (gate_fd < 0) {
        if (errno == EEXIST) { dprintf(1, "error this attempt of the job was already launched\n"); _exit(1); }
        die(gate);
    }
    dprintf(gate_fd, "%d %lld\n", (int)getpid(), start_ticks());
    close(gate_fd);

    char log_path[4096];
    snprintf(log_path, sizeof log_path, "%s/log", job_dir);
    /* O_NOFOLLOW: a link planted as the log is refused; O_NONBLOCK: so is a fifo, at once. */
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
    if (log_fd < 0) die(log_path);
    struct stat log_st;
    if (fstat(log_fd, &log_st) < 0) die(log_path);
    if (!S_ISREG(log_st.st_mode)) { errno = EINVAL; die(log_path); }
    if (fcntl(log_fd, F_SETFL, O_APPEND) < 0) die(log_path);
    /* The log stays root's, never the job's user's (a tenant's): the owner of a file may
     * take a write lease on it (F_SETLEASE), and a lease on a log makes each later open of
     * it by the server block until the lease breaks (fs.lease-break-time, 45 s), again and
     * again. Its group is the job's (a tenant's gid is its own), so that a group quota
     * counts a tenant's logs against that tenant; mode 0600 gives the group no access, and
     * the job writes it through the descriptor it is given, and cannot reopen it. */
    if (gid >= 0 && fchown(log_fd, (uid_t)-1, (gid_t)gid) < 0) die(log_path);
    if (env_file) read_env_file(env_file);
    int command_fd = -1;
    if (command_file) command = read_command(command_file, &command_fd);
    int errpipe[2];
    if (pipe2(errpipe, O_CLOEXEC) < 0) die("pipe2");
    struct timespec started;
    clock_gettime(CLOCK_REALTIME, &started);
    usage_log.start_ns = now_ns();
    usage_log.interval_ns = USAGE_FIRST_NS;
    usage_log.next_ns = usage_log.start_ns + USAGE_FIRST_NS;

    int placed = 0;
    pid_t pid = -1;
    if (into) {
        int dirfd = open(into, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dirfd >= 0) {
            pid = fork_into(dirfd);
            placed = pid >= 0;
            close(dirfd);
        }
    }
    if (!placed) pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        int err = errpipe[1];
        close(errpipe[0]);
        /* Join the cgroups before anything of the job runs ("0" means the writer itself). */
        for (int i = 0; i < njoins && !placed; i++) {
            int fd = open(joins[i], O_WRONLY | O_CLOEXEC);
            if (fd < 0 || write(fd, "0", 1) != 1) child_fail(err, "cannot join cgroup", joins[i]);
            close(fd);
        }
        if (pgid && setpgid(0, 0) < 0) child_fail(err, "setpgid", NULL);
        for (int i = 0; i < nrlimits; i++)
            if (set_rlimit(rlimits[i]) < 0) child_fail(err, "setrlimit", rlimits[i]);
        /* O_CLOEXEC: the job gets /dev/null as descriptor 0 only, not a stray copy too
         * (dup2 clears the flag on 0; when open returns 0 itself, it is cleared here). */
        int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (devnull < 0 || (devnull == 0 ? fcntl(0, F_SETFD, 0) : dup2(devnull, 0)) < 0 || dup2(log_fd, 1) < 0 ||
            dup2(log_fd, 2) < 0)
            child_fail(err, "redirect", NULL);
        signal(SIGHUP, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        if (private_tmp || hide_pids || nhides) private_mounts(err, private_tmp, hide_pids);
        if (ndevices) hide_devices(err, cover);
        if (gid >= 0 && (setgroups(0, NULL) < 0 || setgid((gid_t)gid) < 0)) child_fail(err, "setgid", NULL);
        if (uid >= 0 && setuid((uid_t)uid) < 0) child_fail(err, "setuid", NULL);
        if (no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) child_fail(err, "prctl", "PR_SET_NO_NEW_PRIVS");
        if (mask >= 0) umask((mode_t)mask);
        if (chdir(cwd) < 0) child_fail(err, "cannot enter the working directory", cwd);
        if (clear_env && clearenv() != 0) child_fail(err, "clearenv", NULL);
        for (int i = 0; i < nenvs; i++) putenv(envs[i]);
        if (command_fd >= 0) {
            /* The shell reads the command on descriptor 9 (dash takes one digit). */
            if (err == COMMAND_FD && (err = fcntl(err, F_DUPFD_CLOEXEC, COMMAND_FD + 1)) < 0) _exit(127);
            if (command_fd == COMMAND_FD) {
                if (fcntl(command_fd, F_SETFD, 0) < 0) child_fail(err, "fcntl", "the command file");
            } else if (dup2(command_fd, COMMAND_FD) < 0) {
                child_fail(err, "dup2", "the command file");
            }
            execl("/bin/sh", "sh", "-c", FROM_FD, (char *)NULL);
        } else {
            execl("/bin/sh", "sh", "-c", command, (char *)NULL);
        }
        child_fail(err, "exec", "/bin/sh");
    }
    close(errpipe[1]);
    struct log_cap cap;
    cap_init(&cap, log_fd, log_max ? atoll(log_max) : 0, job_dir); /* log_fd stays open: cuts are made through it */
    if (command_fd >= 0) close(command_fd);
    char failure[2048];
    ssize_t got = 0, n;
    while ((n = read(errpipe[0], failure + got, sizeof failure - 1 - got)) > 0) got += n;
    close(errpipe[0]);

    char pid_s[32], started_s[64], status_s[32];
    snprintf(pid_s, sizeof pid_s, "%d", (int)pid);
    snprintf(started_s, sizeof started_s, "%lld.%06ld", (long long)started.tv_sec, started.tv_nsec / 1000);
    if (got > 0) {
        /* The exec failed: the Python half records it, cleans up and tells the starter. */
        failure[got] = 0;
        int wstatus;
        waitpid(pid, &wstatus, 0);
        execl(python, python, "-I", "-S", supervisor, "--finish", job_dir, "--pid", pid_s,
              "--started", started_s, "--failed", failure, (char *)NULL);
        die("exec python");
    }
    /* The watchdog: forked before the status says "running", so a supervisor that a status
     * names always has one; the pipe is made after the job's fork, so the job never holds it. */
    int watch[2] = {-1, -1};
    char self_s[32], self_start_s[32], reaper[4096], watch_fd_s[16];
    snprintf(self_s, sizeof self_s, "%d", (int)getpid());
    snprintf(self_start_s, sizeof self_start_s, "%lld", start_ticks());
    const char *slash = strrchr(supervisor, '/');
    snprintf(reaper, sizeof reaper, "%.*sreap.py", slash ? (int)(slash - supervisor + 1) : 0, supervisor);
    /* Best effort: the job already runs, so without a watchdog it is still supervised. */
    if (pipe2(watch, O_CLOEXEC) == 0 && fcntl(watch[1], F_SETFD, 0) == 0) { /* kept across the exec */
        pid_t dog = fork();
        if (dog == 0) {
            close(watch[1]);
            char *reap_argv[] = {(char *)python, "-I", "-S", reaper, (char *)job_dir, self_s, self_start_s, NULL};
            watchdog(watch[0], reap_argv);
        }
        close(watch[0]);
        if (dog < 0) { close(watch[1]); watch[1] = -1; }
    } else if (watch[0] >= 0) {
        close(watch[0]);
        close(watch[1]);
        watch[1] = -1;
    }
    snprintf(watch_fd_s, sizeof watch_fd_s, "%d", watch[1]);
    char buf[512], failed_path[4096];
    snprintf(buf, sizeof buf, "%d\n", (int)pid);
    int recorded = write_file(job_dir, "pid", buf, failed_path, sizeof failed_path) == 0;
    if (recorded) {
        snprintf(buf, sizeof buf,
                 "{\"state\": \"running\", \"pid\": %d, \"started_at\": %s, "
                 "\"supervisor_pid\": %d, \"supervisor_start\": %lld}",
                 (int)pid, started_s, (int)getpid(), start_ticks());
        recorded = write_file(job_dir, "status.json", buf, failed_path, sizeof failed_path) == 0;
    }
    if (!recorded) {
        /* The job runs, but nothing says so: it must not run on unseen, nor leave its
         * cgroup behind. Its main process is killed and reaped here; the finisher kills
         * the rest of its cgroup, removes it, records "failed" and tells the starter. */
        snprintf(failure, sizeof failure, "cannot record the job's start: %.1900s: %s", failed_path, strerror(errno));
        kill(pid, SIGKILL);
        int wstatus;
        while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {}
        execl(python, python, "-I", "-S", supervisor, "--finish", job_dir, "--pid", pid_s,
              "--started", started_s, "--failed", failure, "--watchdog-fd", watch_fd_s, (char *)NULL);
        die("exec python");
    }
    dprintf(1, "ok %d\n", (int)pid);
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
    if (devnull > 2) close(devnull); /* not a stray copy in the finisher */

    if (supervise(pid, limit, &cap)) {
        /* Time is up: the Python half stops the whole job (a grandchild, so nobody waits
         * for it but init); meanwhile the cap still holds, and the job's end reaches
         * wait4 below as usual. */
        pid_t killer = fork();
        if (killer == 0) {
            if (fork() == 0) {
                if (watch[1] >= 0) close(watch[1]);
                execl(python, python, "-I", "-S", supervisor, "--time-out", job_dir, "--pid", pid_s,
                      "--grace", grace, (char *)NULL);
            }
            _exit(0);
        }
        if (killer > 0) waitpid(killer, NULL, 0);
        supervise(pid, -1, &cap);
    }
    int wstatus;
    struct rusage usage;
    while (wait4(pid, &wstatus, 0, &usage) < 0)
        if (errno != EINTR) die("wait4");
    char maxrss[32], cpu[64];
    snprintf(status_s, sizeof status_s, "%d", wstatus);
    snprintf(maxrss, sizeof maxrss, "%ld", usage.ru_maxrss);
    snprintf(cpu, sizeof cpu, "%.6f",
             (double)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                 (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6);
    char cap_s[32], seen_s[32];
    snprintf(cap_s, sizeof cap_s, "%lld", log_max ? atoll(log_max) : 0LL); /* the last trim is the finisher's */
    snprintf(seen_s, sizeof seen_s, "%lld", cap.last_size); /* past this, a full disk is the log's own doing */
    execl(python, python, "-I", "-S", supervisor, "--finish", job_dir, "--pid", pid_s,
          "--started", started_s, "--wait-status", status_s, "--maxrss-kb", maxrss,
          "--cpu", cpu, "--log-max", cap_s, "--log-seen", seen_s, "--watchdog-fd", watch_fd_s, (char *)NULL);
    die("exec python");
    return 1;
}
