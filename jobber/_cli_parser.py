"""The ``jobber`` command line's arguments: every subcommand, its options and their help.

Kept apart from ``cli.py`` (what each subcommand does) so each reads on its own.
"""

from __future__ import annotations

import argparse
import os

from jobber._cli_wait import add_wait_parser
from jobber._job_flags import JobFlags

__all__ = ["build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed so the docs and tests can inspect it)."""
    parser = argparse.ArgumentParser(
        prog="jobber",
        description="Run shell commands as isolated, resource-limited jobs with live logs.",
        epilog="Environment: JOBBER_CERT (identity), JOBBER_ROOT (pool root, default ~/.jobber), "
        "JOBBER_JOBS_DIR (default ~/.local/state/jobber/jobs; /tmp/jobber-jobs for root; jobber doctor prints it), "
        "JOBBER_SERVER/JOBBER_KEY/JOBBER_CA (remote), "
        "JOBBER_ISOLATION (cgroup-v2|cgroup-v1|none), JOBBER_BACKEND (local|slurm), "
        "JOBBER_SLURM_JOBS_DIR (Slurm's script and log, on a filesystem the compute nodes share; docs/slurm.md).",
    )
    parser.add_argument("--cert", default=os.environ.get("JOBBER_CERT"),
                        help="identity: a PEM certificate (default $JOBBER_CERT)")
    parser.add_argument("--root", default=None, help="where the pool lives: ROOT/pool (default $JOBBER_ROOT or ~/.jobber)")
    parser.add_argument("--server", default=os.environ.get("JOBBER_SERVER"),
                        help="use a jobber server at this https URL (default $JOBBER_SERVER)")
    parser.add_argument("--key", default=os.environ.get("JOBBER_KEY"), help="private key of --cert, for --server (default $JOBBER_KEY)")
    parser.add_argument("--ca", default=os.environ.get("JOBBER_CA"),
                        help="CA of the server's certificate, for --server (default $JOBBER_CA)")
    sub = parser.add_subparsers(dest="action", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="start a job", description="Start COMMAND as a job. One argument is "
                         "run as a shell script (`jobber run -- 'echo $HOME'`); several are quoted and joined.")
    JobFlags.add_to(run)
    run.add_argument("-f", "--follow", action="store_true", help="print the log live and exit with the job's code")
    run.add_argument("command", nargs=argparse.REMAINDER, help="the command (after --)")

    sweep = sub.add_parser("sweep", help="one job per combination of parameter values",
                           description="Start one job per combination of the --param values: {NAME} in the "
                           "command is replaced by each value (quoted for the shell), and the job gets "
                           "SWEEP_NAME=value. Prints each job's id and parameters.")
    sweep.add_argument("--param", action="append", default=[], metavar="NAME=V1,V2",
                       help="a parameter and its values (repeatable): --param lr=0.1,0.01")
    JobFlags.add_to(sweep)
    sweep.add_argument("command", nargs=argparse.REMAINDER, help="the command template (after --)")

    queue = sub.add_parser("queue", help="show the queues, or set one's limits",
                           description="Without NAME: every queue, its limits, and its jobs running and waiting. "
                           "With NAME: that queue; with limits too, set them (0 removes one). Jobs join a "
                           "queue with `jobber run --queue NAME`.")
    queue.add_argument("name", nargs="?", metavar="NAME", help="the queue")
    queue.add_argument("--parallel", metavar="N", help="at most N of its jobs run at once")
    queue.add_argument("--memory", metavar="SIZE", help="admit while its running jobs' memory limits sum to at most SIZE")
    queue.add_argument("--cpus", metavar="C", help="the same, for their CPU limits")
    queue.add_argument("--gpus", metavar="N", help="the same, for their GPUs")
    queue.add_argument("--json", action="store_true", help="machine-readable output")

    ls = sub.add_parser("ls", help="list this identity's jobs", description="List the jobs, newest last: "
                        "the newest 200 unless -n or --all say otherwise.")
    ls.add_argument("--json", action="store_true", help="machine-readable output, every matching job")
    JobFlags.add_to(ls, JobFlags.LIST)

    status = sub.add_parser("status", help="show a job's status")
    status.add_argument("job_id", metavar="ID|LABEL", help="a job id, or a label (its newest job)")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    logs = sub.add_parser("logs", help="print a job's log")
    logs.add_argument("job_id", metavar="ID|LABEL", help="a job id, or a label (its newest job)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    logs.add_argument("-n", "--lines", type=int, default=None, help="only the last LINES lines")
    logs.add_argument("--attempt", type=int, metavar="N", help="the log of attempt N of a retried job "
                      "(default: the current one)")

    stop = sub.add_parser("stop", help="stop a job and every process it started")
    stop.add_argument("job_id", metavar="ID|LABEL", help="a job id, or a label (its newest job)")
    stop.add_argument("--grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL (default 5)")
    add_wait_parser(sub)

    rerun = sub.add_parser("rerun", help="run a job again, as it was or with some options changed",
                           description="Start a new job with the command, limits and options of ID|LABEL "
                           "(the newest job with that label); options given here replace the old ones.")
    rerun.add_argument("job_id", metavar="ID|LABEL", help="the job to run again")
    for flag, what in (("--cpu", "CPUs"), ("--memory", "memory limit"), ("--pids", "most processes"),
                       ("--io-read", "disk read bytes/s"), ("--io-write", "disk write bytes/s")):
        rerun.add_argument(flag, help=f"new {what}")
    rerun.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                       help="set (or replace) an environment variable (repeatable)")
    rerun.add_argument("--label", metavar="NAME", help="a new label")
    JobFlags.add_to(rerun, JobFlags.LIFECYCLE)
    rerun.add_argument("-f", "--follow", action="store_true", help="print the log live and exit with the job's code")

    rm = sub.add_parser("rm", help="remove ended jobs (their directories and logs)",
                        description="Remove jobs that ended or never started; a running one is kept (stop it first).")
    JobFlags.add_to(rm, JobFlags.RM)

    prune = sub.add_parser("prune", help="remove ended jobs, e.g. older than a week",
                           description="Remove ended jobs' directories and logs, and jobs never started once "
                           "older than --older-than (default a day); running jobs are never touched.")
    JobFlags.add_to(prune, JobFlags.PRUNE)

    certs = sub.add_parser("certs", help="a team's certificates: list, check, issue, revoke, make a demo pool")
    certs_sub = certs.add_subparsers(dest="certs_action", metavar="ACTION")
    check = certs_sub.add_parser("check", help="validate a PEM against the pool: valid or why not, for whom, its hash")
    check.add_argument("file")
    check.add_argument("--hash", action="store_true", help="print only the SHA-256 hash (for scripts)")
    demo = certs_sub.add_parser("init-demo", help="make a demo CA, client and server certificates and a pool")
    demo.add_argument("directory")
    demo.add_argument("--force", action="store_true", help="overwrite existing files")
    issue = certs_sub.add_parser("issue", help="issue a client certificate NAME.pem and key NAME.key, signed by the "
                                 "pool's CA", description="Make a client certificate for a new member, signed by the "
                                 "pool's CA (the pool certificate whose key --ca-key is), and its key (mode 0600).")
    issue.add_argument("name", help="the member's name: the certificate's CN and the files' name")
    issue.add_argument("--days", type=int, default=365, help="how long it is valid (default 365)")
    issue.add_argument("--ca-key", metavar="PATH", help="the CA's private key (default ROOT/ca.key)")
    issue.add_argument("--out", metavar="DIR", default=".", help="where to write NAME.pem and NAME.key (default .)")
    issue.add_argument("--force", action="store_true", help="overwrite existing files")
    listing = certs_sub.add_parser("list", help="every identity the pool admits: subject, hash, issuer, expiry, revoked")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    revoke = certs_sub.add_parser("revoke", help="refuse a certificate from now on (here and on a running server)",
                                  description="Record a revocation in ROOT/pool/revoked/HASH: from_pem and a running "
                                  "server refuse the certificate from its next use; its jobs are kept.")
    revoke.add_argument("target", metavar="CERT|HASH", help="the certificate's PEM file, or its SHA-256 hash")
    revoke.add_argument("--ca-key", metavar="PATH", help="its CA's private key, to write the CA's revocation list "
                        "so that a server refuses the certificate at the TLS handshake (default ROOT/ca.key)")
    owned = certs_sub.add_parser("jobs", help="an identity's jobs by its hash (a revoked one's too); --stop stops them",
                                 description="For an administrator: the jobs of an identity in this jobs directory "
                                 "(JOBBER_JOBS_DIR; a server's is its own), also after its certificate was revoked.")
    owned.add_argument("hash", metavar="HASH", help="the identity's SHA-256 hash, as `jobber certs list` prints it")
    owned.add_argument("--stop", action="store_true", help="stop its running jobs")
    owned.add_argument("--grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL (default 5)")

    doctor = sub.add_parser("doctor", help="what confines jobs here, each limit, and the fixes",
                            description="Check this host and user as the next job will meet them: the cgroup "
                            "layout, the isolation a job gets and why, each limit (cpu, memory, pids, io) with "
                            "its fix, the launcher, the jobs directory, the identity and the pool. Exits 0 when "
                            "jobs would be fully confined, 1 otherwise.")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")

    serve = sub.add_parser("serve", help="serve the jobs API over HTTPS with client certificates")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8443)
    serve.add_argument("--cert", dest="server_cert", required=True, help="the server's certificate (PEM)")
    serve.add_argument("--key", dest="server_key", required=True, help="the server's private key (PEM)")
    serve.add_argument("--root", dest="serve_root", default=None, help="pool root (default: --root, $JOBBER_ROOT, ~/.jobber)")
    serve.add_argument("--uid-range", metavar="LOW-HIGH", default=None,
                       help="as root, each certificate's jobs run as a uid of its own from this range, "
                       "gid the same, no passwd entry needed (default: a free range of 65536 found at start, "
                       "outside every account and /etc/subuid and /etc/subgid entry)")
    serve.add_argument("--state-dir", metavar="DIR", default=None,
                       help="the tenants' uid registry and their homes and /tmp (default /var/lib/jobber)")
    serve.add_argument("--no-private-tmp", dest="private_tmp", action="store_false",
                       help="no mount namespace per job: jobs share this host's /tmp and see every process in /proc")
    serve.add_argument("--single-tenant", action="store_true",
                       help="every certificate of the pool is one party's: run all jobs as one user "
                       "(--job-user, or the server's user); needed when not root")
    serve.add_argument("--job-user", default=None,
                       help="with --single-tenant: run every job as this user (default: nobody when root)")
    serve.add_argument("--python", dest="pythons", metavar="PATH", action="append", default=None,
                       help="an interpreter function jobs may name by path (python=PATH), besides the names on "
                       "the jobs' PATH; repeatable (default: $JOBBER_SERVE_PYTHON, colon-separated)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    bounds = serve.add_argument_group("limits", "what clients may hold (docs/server.md, Limits)")
    for flag, kind, text in (  # each a number: counts (N) or seconds (S)
            ("--max-connections", int, "connections at once, in all (default 4096)"),
            ("--max-connections-per-peer", int, "connections at once from one IP address "
             "(default: an eighth of --max-connections; at most half)"),
            ("--handshake-timeout", float, "seconds from connecting to the end of the TLS handshake (default 10)"),
            ("--header-timeout", float, "seconds for a request's headers, from its first byte, and for its body "
             "(default 10)"),
            ("--keepalive-timeout", float, "seconds an idle connection is kept between requests (default 75)"),
            ("--max-running-jobs", int, "jobs running at once, per certificate (default 64)"),
            ("--max-jobs", int, "jobs kept (until removed), per certificate (default 10000)"),
            ("--max-requests-in-flight", int, "requests answered at once, per certificate, follows included "
             "(default 256)")):
        bounds.add_argument(flag, type=kind, metavar="N" if kind is int else "S", help=text)
    return parser
