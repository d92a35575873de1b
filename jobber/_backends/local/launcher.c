/*
 * jobber's launcher: the small resident half of a job's supervisor.
 *
 * A Python supervisor costs ~40 ms to start and ~6 MB per running job; this costs ~1 ms
 * and ~0.1 MB. It starts the job and waits for it; when the job's main process ends it
 * execs the Python half (supervisor.py --finish), which kills leftovers, reads the
 * cgroup's totals, removes the cgroup and records the outcome. jobber compiles this file
 * on first use (see launcher.py) and falls back to the pure-Python supervisor without
 * a C compiler.
 *
 * usage: launcher JOB_DIR PYTHON SUPERVISOR_PY [--join FILE]... [--into CGROUP_DIR]
 *                 [--rlimit NAME=N]... [--pgid] [--uid N --gid N] [--cwd DIR] [--env K=V]...
 *                 -- COMMAND
 *
 * --into (cgroup v2): the job's process is created inside that cgroup with
 * clone3(CLONE_INTO_CGROUP) (Linux 5.7), so it never has to migrate; where the kernel
 * lacks it, the child joins by writing to cgroup.procs (--join) as on cgroup v1.
 *
 * Protocol with the starter, on stdout: "ok PID\n" once the command was exec'd inside its
 * cgroup, or "error MESSAGE\n" (written by the Python half for a failed exec).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/sched.h>

#define MAX_ITEMS 64

static char *joins[MAX_ITEMS], *envs[MAX_ITEMS], *rlimits[MAX_ITEMS];
static int njoins, nenvs, nrlimits;

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

static int set_rlimit(const char *spec) {
    const char *eq = strchr(spec, '=');
    if (!eq) return -1;
    rlim_t value = strtoull(eq + 1, NULL, 10);
    struct rlimit lim = {value, value};
    if (!strncmp(spec, "RLIMIT_AS=", 10)) return setrlimit(RLIMIT_AS, &lim);
    if (!strncmp(spec, "RLIMIT_NPROC=", 13)) return setrlimit(RLIMIT_NPROC, &lim);
    errno = EINVAL;
    return -1;
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

static void write_file(const char *dir, const char *name, const char *data) {
    char path[4096], tmp[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.%d.tmp", dir, name, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) die(tmp);
    size_t len = strlen(data);
    if (write(fd, data, len) != (ssize_t)len) die(tmp);
    close(fd);
    if (rename(tmp, path) < 0) die(path);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: launcher JOB_DIR PYTHON SUPERVISOR_PY [options] -- COMMAND\n");
        return 2;
    }
    const char *job_dir = argv[1], *python = argv[2], *supervisor = argv[3];
    const char *cwd = "/", *command = NULL, *into = NULL;
    int pgid = 0;
    long uid = -1, gid = -1;
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--") && i + 1 < argc) { command = argv[i + 1]; break; }
        if (!strcmp(argv[i], "--pgid")) { pgid = 1; continue; }
        if (i + 1 >= argc) break;
        if (!strcmp(argv[i], "--join") && njoins < MAX_ITEMS) joins[njoins++] = argv[++i];
        else if (!strcmp(argv[i], "--env") && nenvs < MAX_ITEMS) envs[nenvs++] = argv[++i];
        else if (!strcmp(argv[i], "--rlimit") && nrlimits < MAX_ITEMS) rlimits[nrlimits++] = argv[++i];
        else if (!strcmp(argv[i], "--uid")) uid = atol(argv[++i]);
        else if (!strcmp(argv[i], "--gid")) gid = atol(argv[++i]);
        else if (!strcmp(argv[i], "--cwd")) cwd = argv[++i];
        else if (!strcmp(argv[i], "--into")) into = argv[++i];
        else { fprintf(stderr, "launcher: unknown option %s\n", argv[i]); return 2; }
    }
    if (!command) { fprintf(stderr, "launcher: no command after --\n"); return 2; }

    /* Double fork: the starter reaps this process at once; the supervisor is nobody's child. */
    pid_t first = fork();
    if (first < 0) die("fork");
    if (first > 0) _exit(0);
    signal(SIGHUP, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);

    char log_path[4096];
    snprintf(log_path, sizeof log_path, "%s/log", job_dir);
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) die(log_path);
    int errpipe[2];
    if (pipe2(errpipe, O_CLOEXEC) < 0) die("pipe2");
    struct timespec started;
    clock_gettime(CLOCK_REALTIME, &started);

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
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0)
            child_fail(err, "redirect", NULL);
        signal(SIGHUP, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        if (gid >= 0 && (setgroups(0, NULL) < 0 || setgid((gid_t)gid) < 0)) child_fail(err, "setgid", NULL);
        if (uid >= 0 && setuid((uid_t)uid) < 0) child_fail(err, "setuid", NULL);
        if (chdir(cwd) < 0) child_fail(err, "cannot enter the working directory", cwd);
        for (int i = 0; i < nenvs; i++) putenv(envs[i]);
        execl("/bin/sh", "sh", "-c", command, (char *)NULL);
        child_fail(err, "exec", "/bin/sh");
    }
    close(errpipe[1]);
    close(log_fd);
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
    char buf[512];
    snprintf(buf, sizeof buf, "%d\n", (int)pid);
    write_file(job_dir, "pid", buf);
    snprintf(buf, sizeof buf,
             "{\"state\": \"running\", \"pid\": %d, \"started_at\": %s, "
             "\"supervisor_pid\": %d, \"supervisor_start\": %lld}",
             (int)pid, started_s, (int)getpid(), start_ticks());
    write_file(job_dir, "status.json", buf);
    dprintf(1, "ok %d\n", (int)pid);
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);

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
    execl(python, python, "-I", "-S", supervisor, "--finish", job_dir, "--pid", pid_s,
          "--started", started_s, "--wait-status", status_s, "--maxrss-kb", maxrss,
          "--cpu", cpu, (char *)NULL);
    die("exec python");
    return 1;
}
