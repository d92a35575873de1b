"""Which uid each tenant of a per-tenant server has: ``<state dir>/tenants.json``.

A tenant (a certificate's SHA-256) is given the lowest free uid of the range the first
time it starts a job, and keeps it: the registry is written atomically under ``flock``
of ``tenants.lock``, so that two servers sharing a state directory never hand out one
uid twice. A uid with a passwd or group entry, one that owns a running process, or one
whose tenant directory exists is never handed out, nor one inside an ``/etc/subuid`` or
``/etc/subgid`` range (another user's rootless containers run as those ids).

The default range is found, not fixed: the highest 65536 uids, aligned, between
``0x70000000`` and ``0x7FFDFFFF`` that no passwd or group entry and no subordinate range
holds. ``useradd`` hands out subordinate ranges from 100000 up to 600100000, systemd keeps
below ``0x70000000`` (containers, DynamicUser) and from ``0x7FFE0000`` (its foreign uid
range), and ids from 2^31 are read as negative by some tools. The search runs at each
start, and every recorded tenant uid is checked again then (:meth:`UidRegistry.check`):
a later ``useradd`` or ``usermod`` that reached one is refused with the exact fix.
"""

from __future__ import annotations

import fcntl
import grp
import json
import logging
import os
import pwd
import threading
from collections.abc import Iterable
from pathlib import Path

from jobber._errors import JobberError, JobError
from jobber._files import read_json, write_atomic

__all__ = ["SUBORDINATE_FILES", "UidRegistry", "default_uid_range", "process_uids", "subordinate_ranges"]

log = logging.getLogger("jobber.server")

_REGISTRY = "tenants.json"
_LOCK = "tenants.lock"
SUBORDINATE_FILES = ("/etc/subuid", "/etc/subgid")
_SPAN = 65536
_SEARCH_LOW, _SEARCH_HIGH = 0x70000000, 0x7FFDFFFF
_SUB_MIN = 100000  # useradd's SUB_UID_MIN


def subordinate_ranges(files: tuple[str, ...] = SUBORDINATE_FILES) -> list[tuple[str, str, int, int]]:
    """Every ``name:start:count`` entry of ``files``: (file, name, first id, last id)."""
    found = []
    for path in files:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            name, _, rest = line.strip().partition(":")
            start, _, count = rest.partition(":")
            if start.isdigit() and count.isdigit() and int(count) > 0:
                found.append((path, name, int(start), int(start) + int(count) - 1))
    return found


def _account_ids() -> set[int]:
    """Every uid of passwd and gid of group (a tenant's gid is its uid)."""
    return {entry.pw_uid for entry in pwd.getpwall()} | {entry.gr_gid for entry in grp.getgrall()}


def default_uid_range() -> tuple[int, int]:
    """The highest free aligned window of 65536 uids between 0x70000000 and 0x7FFDFFFF.

    Raises:
        JobberError: every window holds an account or a subordinate range.
    """
    taken = [(first, last) for _, _, first, last in subordinate_ranges()]
    taken += [(uid, uid) for uid in _account_ids() | {os.geteuid()}]
    low = _SEARCH_HIGH + 1 - _SPAN
    while low >= _SEARCH_LOW:
        high = low + _SPAN - 1
        if not any(first <= high and low <= last for first, last in taken):
            return low, high
        low -= _SPAN
    raise JobberError(f"no free range of {_SPAN} uids between {_SEARCH_LOW} and {_SEARCH_HIGH} for tenants: "
                      "pass --uid-range LOW-HIGH outside every passwd uid and /etc/subuid and /etc/subgid entry")


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

    def check(self) -> None:
        """Refuse recorded tenant uids that a user or subordinate range added since holds.

        Raises:
            JobberError: naming the tenant's uid, who holds it now, and the exact fix.
            JobError: the registry is unreadable or corrupt.
        """
        table = self._read()
        if not table:
            return
        ranges = subordinate_ranges()
        for owner, uid in sorted(table.items(), key=lambda item: item[1]):
            fix_new_uid = (f"or, to give that tenant a new uid (its files in {self.tenants_dir / str(uid)} stay "
                           f"behind), remove \"{owner}\" from {self.state_dir / _REGISTRY}")
            holding = [entry for entry in ranges if entry[2] <= uid <= entry[3]]
            if holding:
                starts: dict[str, int] = {}  # per file: subuid and subgid ranges stay side by side
                found, fixes = [], []
                for path, name, first, last in holding:
                    kind = "subgids" if path.endswith("subgid") else "subuids"
                    start = starts.get(kind) or _free_subordinate_start(ranges, [*table.values(), self.high])
                    starts[kind] = start + last - first + 1
                    found.append(f"{path}'s {name}:{first}:{last - first + 1} ({first}-{last})")
                    fixes.append(f"usermod --del-{kind} {first}-{last} --add-{kind} {start}-{start + last - first} "
                                 f"{name}")
                raise JobberError(
                    f"tenant {owner[:12]}'s uid {uid} is inside {' and '.join(found)}, so that user's containers "
                    f"could run as the tenant: give the user another range ({' && '.join(fixes)}); {fix_new_uid}")
            held = _account_of(uid)
            if held:
                what, holder = held
                change = "usermod -u" if what == "user" else "groupmod -g"
                raise JobberError(f"tenant {owner[:12]}'s uid {uid} is now the id of the {what} {holder}, whose "
                                  f"files that tenant's jobs could reach: give {holder} another id ({change} NEW "
                                  f"{holder}); {fix_new_uid}")

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
        subordinate = [(first, last) for _, _, first, last in subordinate_ranges()]
        for uid in range(self.low, self.high + 1):
            if uid in used or uid in running or os.path.lexists(self.tenants_dir / str(uid)):
                continue
            if any(first <= uid <= last for first, last in subordinate):
                continue  # a user added since the start was given a range over it
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


def _account_of(uid: int) -> tuple[str, str] | None:
    """("user", name) or ("group", name) holding the id ``uid``, or None."""
    try:
        return "user", pwd.getpwuid(uid).pw_name
    except KeyError:
        pass
    try:
        return "group", grp.getgrgid(uid).gr_name
    except KeyError:
        return None


def _free_subordinate_start(ranges: list[tuple[str, str, int, int]], tenant_uids: Iterable[int]) -> int:
    """Where ``useradd`` would start the next subordinate range, past every tenant uid
    (and the server's range) below the default search window as well: free of them all."""
    ends = [last for _, _, _, last in ranges] + [uid for uid in tenant_uids if uid < _SEARCH_LOW]
    return max([_SUB_MIN - 1, *ends]) + 1


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
