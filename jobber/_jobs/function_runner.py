"""What a function job runs: ``PYTHON -u function_runner.py JOB_DIR``.

It loads ``call.pkl`` (``jobber._jobs.pycall.pack_call``), calls the function, and writes
its outcome to the job directory, each file atomically (a temporary file, then a rename):

    result.pkl    cloudpickle of the return value, or of the exception raised
    result.json   {"ok", "type", "size", "traceback", "python", "error"}: JSON, so that
                  anyone may read it without unpickling anything

A return value or an exception pickled larger than ``result_max`` bytes (``argv[2]``) is
not kept: the job ends "failed" with the reason in result.json and in the log. On an
exception the traceback goes to the log, and the exit code is 1; an exception that does
not pickle (or would not unpickle, or passes the cap) leaves only result.json, carrying its
type name and traceback. The traceback text is cut to its head and tail (``TRACEBACK_MAX``
characters in all): result.json is read whole by listings and views.

Run by file path with the job's own interpreter, which may be a server's ``python3``
without jobber: this module imports the standard library and cloudpickle only.
"""

import json
import os
import pickle
import sys

CALL, RESULT, RESULT_META = "call.pkl", "result.pkl", "result.json"
PYTHON_VERSION = "{}.{}".format(*sys.version_info[:2])
TRACEBACK_MAX = 64 * 1024  # characters of traceback kept: an exception's message may be 50 MB


class TooLarge(Exception):
    """The pickled result passed ``result_max``."""


class CappedFile:
    """A file that refuses to grow past ``cap`` bytes (the result is streamed to disk, never
    held twice in memory, and a 50 GB result stops at the cap rather than fill the disk)."""

    def __init__(self, file, cap):
        self.file, self.cap, self.size = file, cap, 0

    def write(self, data):
        self.size += len(memoryview(data).cast("B"))
        if self.size > self.cap:
            raise TooLarge()
        return self.file.write(data)


def main(argv):
    # A server's job, as its tenant's uid, cannot reach its job directory: the server
    # hands it a directory of its own (jobber._server.function_files).
    job_dir = os.environ.get("JOBBER_FUNCTION_DIR") or argv[1]
    cap = int(argv[2]) if len(argv) > 2 else 1 << 30
    # Run by path, Python put this file's directory (jobber/_jobs) first on sys.path: its
    # modules must not shadow the caller's (a "logs.py" beside the notebook, say).
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]
    for name in (RESULT, RESULT_META):  # a stale outcome must never be read as this one's
        _discard(os.path.join(job_dir, name))
    try:
        with open(os.path.join(job_dir, CALL), "rb") as f:
            payload = pickle.load(f)
        if payload.get("python") != PYTHON_VERSION:
            return _refuse(job_dir, f"the call was pickled by Python {payload.get('python')}, but this job runs "
                                    f"Python {PYTHON_VERSION} ({sys.executable}): choose an interpreter of the same "
                                    "major.minor (python=)")
        _extend_path(payload.get("sys_path") or [])
        fn, args, kwargs = pickle.loads(payload["call"])
    except BaseException as exc:  # a module the job cannot import, a version skew: the caller sees it raised
        return _raised(job_dir, exc, cap)
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:
        return _raised(job_dir, exc, cap)
    return _returned(job_dir, value, cap)


def _extend_path(paths):
    """The caller's ``sys.path`` first (modules beside the notebook), then the job's own."""
    have = set(sys.path)
    sys.path[:0] = [p for p in paths if p not in have and os.path.exists(p)]


def _returned(job_dir, value, cap):
    import cloudpickle

    tmp = _tmp_name(os.path.join(job_dir, RESULT))
    try:
        with _private(tmp) as f:
            capped = CappedFile(f, cap)
            cloudpickle.dump(value, capped, protocol=pickle.HIGHEST_PROTOCOL)
    except TooLarge:
        _discard(tmp)
        return _refuse(job_dir, f"its result (a {_type_name(value)}) pickles to more than result_max "
                                f"({_size_text(cap)}), so it was not kept: return less (write big data to a file "
                                "and return its path), or raise result_max", value)
    except Exception as exc:
        _discard(tmp)
        return _refuse(job_dir, f"its result (a {_type_name(value)}) cannot be pickled "
                                f"({type(exc).__name__}: {exc}): return plain data instead", value)
    os.rename(tmp, os.path.join(job_dir, RESULT))
    _write_meta(job_dir, {"ok": True, "type": _type_name(value), "size": capped.size, "traceback": None, "error": None})
    return 0


def _raised(job_dir, exc, cap):
    import traceback

    text = cut_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    sys.stderr.write(text)
    sys.stderr.flush()
    meta = {"ok": False, "type": _type_name(exc), "size": 0, "traceback": text, "error": None}
    tmp = _tmp_name(os.path.join(job_dir, RESULT))
    try:
        import cloudpickle

        exc.__traceback__ = None  # its frames hold locals that need not (or cannot) travel
        with _private(tmp) as f:  # capped as a return value is: streamed, never whole in memory
            capped = CappedFile(f, cap)
            cloudpickle.dump(exc, capped, protocol=pickle.HIGHEST_PROTOCOL)
        with open(tmp, "rb") as f:
            pickle.load(f)  # an exception whose __init__ takes other arguments pickles, then fails to load
    except TooLarge:
        _discard(tmp)
        meta["error"] = (f"the exception pickles to more than result_max ({_size_text(cap)}), so only its "
                         "type and traceback were kept")
    except Exception as err:
        _discard(tmp)
        meta["error"] = f"the exception could not be sent back: {type(err).__name__}: {err}"
    else:
        os.rename(tmp, os.path.join(job_dir, RESULT))
        meta["size"] = capped.size
    _write_meta(job_dir, meta)
    return 1


def cut_text(text, limit=TRACEBACK_MAX):
    """``text`` if it is at most ``limit`` characters, else its head and tail around a line
    that says how much was cut."""
    if len(text) <= limit:
        return text
    keep = limit // 2
    return f"{text[:keep]}\n... {len(text) - 2 * keep} characters cut ...\n{text[-keep:]}"


def _refuse(job_dir, reason, value=None):
    """The job keeps no result, and says why (log and result.json): it ends "failed"."""
    sys.stderr.write(f"jobber: {reason}\n")
    sys.stderr.flush()
    _write_meta(job_dir, {"ok": False, "type": None if value is None else _type_name(value), "size": 0,
                          "traceback": None, "error": reason})
    return 1


def _write_meta(job_dir, meta):
    meta["python"] = PYTHON_VERSION
    _write_atomic(os.path.join(job_dir, RESULT_META), json.dumps(meta).encode())


def _write_atomic(path, data):
    """Readers see no file, or the whole of it (as jobber's own writes: no fsync, which
    would cost every job the disk's latency for a durability no job status has either)."""
    tmp = _tmp_name(path)
    try:
        with _private(tmp) as f:
            f.write(data)
    except BaseException:
        _discard(tmp)
        raise
    os.rename(tmp, path)


def _tmp_name(path):
    head, name = os.path.split(path)
    return os.path.join(head, f".{name}.{os.getpid()}.tmp")


def _private(path):
    """A new file only this user may read, never written through a link planted in its place."""
    _discard(path)
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600), "wb")


def _discard(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _type_name(value):
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _size_text(size):
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


if __name__ == "__main__":
    sys.exit(main(sys.argv))
