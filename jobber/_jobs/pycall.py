"""A Python call as a job: packed here, run by the job's runner, its result read back.

    caller (the kernel)                         the job (its own interpreter, confined)
    pack_call(fn, args, kwargs) -> call.pkl --> function_runner.py: load, call, write
    load_result(meta, data)     <-- result.pkl + result.json (atomic; capped by result_max)

Pickle runs code, so who unpickles what is the security boundary: the job unpickles its
own call, inside its own confinement; only the owner's client unpickles a result
(:func:`load_result`); nothing in between (a jobber server, the CLI, a listing) does:
they read ``result.json``, which is JSON. cloudpickle needs the same Python major.minor
at both ends, so :func:`check_python` refuses a mismatch before a job is made.
"""

from __future__ import annotations

import functools
import inspect
import io
import os
import pickle
import re
import shlex
import socket
import subprocess
import sys
import threading
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from jobber._errors import JobError, RemoteError
from jobber._limits import parse_size

__all__ = ["CALL", "RESULT", "RESULT_META", "DEFAULT_RESULT_MAX", "PYTHON_VERSION", "check_python", "function_label", "function_name",
           "load_result", "pack_call", "result_max_of", "runner_command"]

CALL, RESULT, RESULT_META = "call.pkl", "result.pkl", "result.json"
"""The files of a function job in its directory (the runner writes the last two)."""
DEFAULT_RESULT_MAX = 1 << 30
PYTHON_VERSION = "{}.{}".format(*sys.version_info[:2])
_PAYLOAD_VERSION = 1
_RUNNER = Path(__file__).with_name("function_runner.py")


def pack_call(fn: Callable[..., Any], args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None) -> bytes:
    """``fn(*args, **kwargs)``, pickled for a job to run (cloudpickle: functions and classes
    defined in the notebook travel by value; those of importable modules by name, which
    the job imports with this process's ``sys.path``).

    Args:
        fn: what to call.
        args: its positional arguments.
        kwargs: its keyword arguments.

    Returns:
        The payload for ``new_function_job``.

    Raises:
        JobError: ``fn`` is not callable, or something cannot be pickled: the sentence
            names it and why ("argument 'lock': a lock held by the kernel cannot be sent
            to a job (_thread.lock cannot be pickled)").
    """
    import cloudpickle

    if not callable(fn):
        raise JobError(f"{fn!r} is not callable: give the function to run, then its arguments")
    kwargs = dict(kwargs or {})
    try:
        call = cloudpickle.dumps((fn, tuple(args), kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as err:  # pickling fails with any exception an object's __reduce__ raises
        raise JobError(_unpicklable(fn, tuple(args), kwargs, err)) from err
    payload = {"version": _PAYLOAD_VERSION, "python": PYTHON_VERSION, "sys_path": _sys_path(), "call": call}
    return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)


def function_name(fn: Callable[..., Any]) -> str:
    """``fn``'s qualified name, a function job's default label ("train", "Model.fit")."""
    return _qualified_name(fn)[:100]


def _qualified_name(fn: Callable[..., Any]) -> str:
    target = fn.func if isinstance(fn, functools.partial) else fn
    name = getattr(target, "__qualname__", None) or getattr(type(target), "__qualname__", "call")
    return str(name).replace("<locals>.", "")


def function_label(fn: Callable[..., Any]) -> str:
    """A function job's default label: ``fn``'s name made a label ("<lambda>": "lambda"; a
    long nested name keeps its end, the function's own name)."""
    name = re.sub(r"[^A-Za-z0-9_.:+-]+", "", _qualified_name(fn))[-64:].strip(".")
    return name if name and not name.isdigit() else "function"


def runner_command(python: str, job_dir: str | os.PathLike[str], result_max: int) -> str:
    """The shell line a function job runs: its interpreter, unbuffered (``-u``: prints reach
    the log live), running the runner on the job's directory with the result's cap."""
    return f"exec {shlex.quote(python)} -u {shlex.quote(str(_RUNNER))} {shlex.quote(str(job_dir))} {int(result_max)}"


def result_max_of(value: int | str | None) -> int:
    """``result_max`` in bytes (default 1 GiB).

    Raises:
        JobError: not a size ("200M", "2G", or bytes) above 0.
    """
    if value is None:
        return DEFAULT_RESULT_MAX
    size = parse_size(value, "result_max")
    if size <= 0:
        raise JobError(f"result_max must be above 0, not {value!r}: give a size such as \"200M\" or \"2G\"")
    return size


def check_python(python: str | None, version: str = PYTHON_VERSION) -> str:
    """The interpreter a function job on this host runs: ``python``, checked, or this one.

    The job's Python must be the caller's major.minor (cloudpickle's bytecode is not
    portable), and must have cloudpickle. Another interpreter is run once to ask (the
    answer is cached for this process).

    Args:
        python: a path or a name on ``PATH``; None for ``sys.executable``.
        version: the caller's "MAJOR.MINOR": this process's, or a server's client's.

    Returns:
        The interpreter to record in the job's spec.

    Raises:
        JobError: it cannot be run, is of another Python version, or lacks cloudpickle.
    """
    if (python is None or python == sys.executable) and version == PYTHON_VERSION:
        return sys.executable
    if python is None:
        raise JobError(f"this host's Python is {PYTHON_VERSION}, the caller's {version}: name a Python {version} "
                       "interpreter with python=")
    if not isinstance(python, str) or not python.strip() or "\0" in python:
        raise JobError(f"python must name an interpreter (a path, or a name on PATH), not {python!r}")
    found, has_cloudpickle = _probe(python)
    if found != version:
        yours = "this kernel" if version == PYTHON_VERSION else "the caller"
        raise JobError(f"python={python!r} is Python {found}, but {yours} is Python {version}: a function "
                       f"job needs the same major.minor at both ends (cloudpickle); name a Python {version} "
                       "interpreter" + (", or leave python= out to use this kernel's own" if version == PYTHON_VERSION
                                        else ""))
    if not has_cloudpickle:
        raise JobError(f"python={python!r} has no cloudpickle, which a function job needs to load its call: "
                       f"install it there ({python} -m pip install cloudpickle)")
    return python


@functools.lru_cache(maxsize=32)
def _probe(python: str) -> tuple[str, bool]:
    code = ("import sys; print('%d.%d' % sys.version_info[:2])\n"
            "try:\n    import cloudpickle\nexcept ImportError:\n    print('no')\nelse:\n    print('yes')\n")
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise JobError(f"python={python!r} cannot be run ({getattr(err, 'strerror', None) or err}): give the path of a "
                       f"Python {PYTHON_VERSION} interpreter, or leave python= out to use this kernel's own") from err
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) != 2:
        raise JobError(f"python={python!r} did not run as a Python interpreter (exit {done.returncode}: "
                       f"{done.stderr.strip()[-200:] or 'no output'})")
    return lines[0], lines[1] == "yes"


def load_result(meta: Mapping[str, Any], data: bytes | BinaryIO, job_id: int | None = None) -> Any:
    """A function job's outcome, as ``Job.result`` gives it: its return value, or the
    exception it raised, re-raised with the job's traceback attached.

    Only the owner's client calls this: it unpickles.

    Args:
        meta: ``result.json``.
        data: ``result.pkl``'s bytes (empty when the runner could not pickle the outcome),
            or a binary file open on them (read and closed here: a numpy array's buffer
            is read straight into its own memory).
        job_id: the job, for messages.

    Returns:
        What the function returned.

    Raises:
        BaseException: the function's own exception, rebuilt here.
        RemoteError: the function raised an exception that cannot be rebuilt here.
        JobError: the job kept no result (over ``result_max``, or not picklable).
    """
    try:
        return _outcome(meta, data, job_id)
    finally:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            data.close()


def _outcome(meta: Mapping[str, Any], data: bytes | BinaryIO, job_id: int | None) -> Any:
    traceback_text = meta.get("traceback")
    if meta.get("ok"):
        return _unpickle(data, meta, job_id)
    if not traceback_text:  # no exception: the runner could not keep the result
        raise JobError(f"job {job_id}: {meta.get('error') or 'it kept no result'}", job_id=job_id)
    type_name = str(meta.get("type") or "Exception")
    try:
        exc = _unpickle(data, meta, job_id) if data else None
    except RemoteError:
        exc = None
    if not isinstance(exc, BaseException):
        why = meta.get("error") or "it could not be pickled"
        last = traceback_text.rstrip().splitlines()[-1] if traceback_text.strip() else type_name
        raise RemoteError(f"job {job_id} raised {type_name}, which cannot be rebuilt here ({why}): {last}",
                          type_name=type_name, traceback_text=traceback_text, job_id=job_id)
    raise _with_traceback(exc, traceback_text, job_id)


def _unpickle(data: bytes | BinaryIO, meta: Mapping[str, Any], job_id: int | None) -> Any:
    try:
        return pickle.loads(data) if isinstance(data, (bytes, bytearray, memoryview)) else pickle.load(data)
    except JobError:  # the file's own: a download that broke off (jobber._backends.remote.download)
        raise
    except Exception as err:
        type_name = str(meta.get("type") or "object")
        raise RemoteError(f"job {job_id}'s result (a {type_name}) cannot be unpickled here: {type(err).__name__}: {err} "
                          "(is its module importable in this kernel?)", type_name=type_name,
                          traceback_text=str(meta.get("traceback") or ""), job_id=job_id) from err


def _with_traceback(exc: BaseException, traceback_text: str, job_id: int | None) -> BaseException:
    """``exc`` carrying the job's traceback: a note (Python 3.11+), else its ``__cause__``."""
    header = f"Traceback in job {job_id}:"
    if hasattr(exc, "add_note"):
        exc.add_note(f"{header}\n{traceback_text.rstrip()}")
    else:
        exc.__cause__ = RemoteError(f"{header}\n{traceback_text.rstrip()}", type_name=f"{type(exc).__module__}."
                                    f"{type(exc).__qualname__}", traceback_text=traceback_text, job_id=job_id)
    return exc


def _sys_path() -> list[str]:
    """This process's ``sys.path``, absolute (the job's cwd is this one's, but ``""`` is
    made explicit so that a job started elsewhere still finds the notebook's modules)."""
    try:
        here = os.getcwd()
    except OSError:
        here = None
    return [os.path.abspath(entry) if entry or here is None else here for entry in sys.path if isinstance(entry, str)]


def _unpicklable(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], err: Exception) -> str:
    """The sentence for a call that does not pickle: which object, and why."""
    for where, value in _parts(fn, args, kwargs):
        found = _culprit(value, where, depth=3)
        if found is not None:
            place, obj, why = found
            return (f"{place}: {_describe(obj)} cannot be sent to a job ({why}); make it inside the function "
                    "instead, or pass what it is made from")
    return f"the call cannot be sent to a job: {type(err).__name__}: {err}"


def _parts(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
    """Each argument by its parameter's name, then what the function carries by value."""
    try:
        bound = inspect.signature(fn).bind_partial(*args, **kwargs).arguments
        named = [(f"argument {name!r}", value) for name, value in bound.items()]
    except (TypeError, ValueError):
        named = [(f"argument {i + 1}", value) for i, value in enumerate(args)]
        named += [(f"argument {name!r}", value) for name, value in kwargs.items()]
    return [*named, *_carried(fn, function_name(fn))]


def _carried(fn: Any, name: str) -> list[tuple[str, Any]]:
    """What a function defined here takes along: closed-over variables, the globals it
    names, its defaults."""
    fn = fn.func if isinstance(fn, functools.partial) else fn
    if not isinstance(fn, types.FunctionType):
        return [(f"the callable {name}", fn)]
    code = fn.__code__
    carried = [(f"{name}'s closed-over variable {var!r}", cell.cell_contents)
               for var, cell in zip(code.co_freevars, fn.__closure__ or ()) if _filled(cell)]
    carried += [(f"{name}'s global {var!r}", fn.__globals__[var]) for var in code.co_names if var in fn.__globals__]
    carried += [(f"{name}'s default for {param!r}", value) for param, value in
                zip(code.co_varnames[code.co_argcount - len(fn.__defaults__ or ()):], fn.__defaults__ or ())]
    return carried


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _culprit(value: Any, where: str, depth: int) -> tuple[str, Any, str] | None:
    """The innermost part of ``value`` that does not pickle, with where it is and why."""
    import cloudpickle

    try:
        cloudpickle.dumps(value)
        return None
    except Exception as err:
        why = _why(value, err)
    if depth > 0:
        for inner_where, inner in _children(value, where):
            found = _culprit(inner, inner_where, depth - 1)
            if found is not None:
                return found
    return where, value, why


def _children(value: Any, where: str) -> list[tuple[str, Any]]:
    if isinstance(value, Mapping):
        return [(f"{where}[{key!r}]", item) for key, item in list(value.items())[:1000]]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [(f"{where}[{i}]", item) for i, item in enumerate(list(value)[:1000])]
    if isinstance(value, types.FunctionType):
        return _carried(value, f"{where} ({function_name(value)})")
    state = getattr(value, "__dict__", None)
    if isinstance(state, dict):
        return [(f"{where}.{name}", item) for name, item in list(state.items())[:1000]]
    return []


def _why(value: Any, err: Exception) -> str:
    text = str(err)
    if isinstance(err, TypeError) and text.startswith("cannot pickle"):
        kind = type(value)
        return f"{kind.__module__}.{kind.__qualname__} cannot be pickled"
    return f"{type(err).__name__}: {text}"[:300]


_LOCKS = (type(threading.Lock()), type(threading.RLock()))


def _describe(value: Any) -> str:
    if isinstance(value, _LOCKS):
        return "a lock held by the kernel"
    if isinstance(value, socket.socket):
        return "an open socket of the kernel"
    if isinstance(value, io.IOBase):
        return "a file open in the kernel"
    if isinstance(value, threading.Thread):
        return "a thread of the kernel"
    if isinstance(value, types.GeneratorType):
        return "a running generator"
    if isinstance(value, types.FunctionType):
        return f"the function {function_name(value)}"
    kind = type(value)
    return f"a {kind.__module__}.{kind.__qualname__}" if kind.__module__ != "builtins" else f"a {kind.__qualname__}"
