"""Which uid each tenant of a per-tenant server has: ``<state dir>/tenants.json``.

A tenant (a certificate's SHA-256) is given the lowest free uid of the range the first
time it starts a job, and keeps it: the registry is written atomically under ``flock``
of ``tenants.lock``, so that two servers sharing a state directory never hand out one
uid twice. A uid with a passwd or group entry, one that owns a running process, or one
whose tenant directory exists is never handed out.
"""

from __future__ import annotations

import fcntl
import grp
import json
import logging
import os
import pwd
import threading
from pathlib import Path

from jobber._errors import JobError
from jobber._files import read_json, write_atomic

__all__ = ["UidRegistry", "process_uids"]

log = logging.getLogger("jobber.server")

_REGISTRY = "tenants.json"
_LOCK = "tenants.lock"


class UidRegistry:
    """The tenants' uids, recorded in ``state_dir``.

    Args:
        state_dir: where ``tenants.json`` and ``tenants.lock`` live (it must exist).
        tenants_dir: the tenants' directories (a uid that has one is not free).
        low, high: the uid range (inclusive).
    """

    def __init__(self, state_dir: Path, tenants_dir: Path, low: int, high: int) -> None:
        self.state_dir = state_dir
        self.tenants_dir = tenants_dir
        self.low, self.high = low, high
        self._known: dict[str, int] = {}
        self._mutex = threading.Lock()

    def uid_of(self, owner: str) -> int:
        """The tenant's uid: recorded, or allocated now (under ``flock``) and recorded.

        Raises:
            JobError: the range is used up, or the registry is unreadable or corrupt.
        """
        uid = self._known.get(owner)
        if uid is not None:
            return uid
        with self._mutex:
            lock = os.open(self.state_dir / _LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                table = self._read()
                uid = table.get(owner)
                if uid is None:
                    uid = self._free(table)
                    table[owner] = uid
                    data = {"version": 1, "uids": table}
                    write_atomic(self.state_dir / _REGISTRY, json.dumps(data, indent=0, sort_keys=True).encode())
                    log.info("tenant %s: uid %d", owner[:12], uid)
            finally:
                os.close(lock)  # releases the flock
            self._known.update(table)  # a recorded uid never changes
        return uid

    def _read(self) -> dict[str, int]:
        path = self.state_dir / _REGISTRY
        data = read_json(path, "tenant registry") or {"uids": {}}
        table = data.get("uids") if isinstance(data, dict) else None
        if not isinstance(table, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0
                for k, v in table.items()):
            raise JobError(f"the tenant registry {path} is corrupt (expected {{\"uids\": {{hash: uid}}}}): "
                           "restore it from a backup; tenants' uids must not change")
        if len(set(table.values())) != len(table):
            raise JobError(f"the tenant registry {path} gives one uid to two tenants: fix it by hand")
        return table

    def _free(self, table: dict[str, int]) -> int:
        """The lowest uid of the range that nobody has: not recorded, no passwd or group
        entry, no process, no tenant directory left from a lost registry."""
        used = set(table.values())
        running = process_uids()
        for uid in range(self.low, self.high + 1):
            if uid in used or uid in running or os.path.lexists(self.tenants_dir / str(uid)):
                continue
            try:
                pwd.getpwuid(uid)
                continue
            except KeyError:
                pass
            try:
                grp.getgrgid(uid)
                continue
            except KeyError:
                pass
            return uid
        raise JobError(f"no free uid left in --uid-range {self.low}-{self.high} for a new tenant: "
                       "restart the server with a larger range")


def process_uids() -> set[int]:
    """The uids that own a process now."""
    uids = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                uids.add(os.stat(f"/proc/{name}").st_uid)
            except OSError:
                pass
    return uids
