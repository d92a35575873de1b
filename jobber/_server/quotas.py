"""What one certificate may take of the server: caps per tenant, and worker threads shared fairly.

A tenant is a client certificate (its hash). Three caps hold per tenant (``Quotas``): jobs
running at once, jobs kept (their directories on disk: a remove or a prune frees room at
once, and so does one by another tool, seen at the cap's recount), and requests in flight. Over a cap the
request is answered 429 before anything is made, with the cap's name and value
(``QuotaExceeded``, which ``app.py`` turns into the JSON error).

Blocking work (a start, a status, a listing's JSON) runs in ``FairPool``: a fixed set of
threads that every tenant shares, where a tenant runs at most ``per_tenant`` calls at once
and queued calls are taken from the tenants in turn. However much one tenant asks, another
tenant's call waits for one free thread at most, never behind the first tenant's queue.

``Tenants`` holds the bookkeeping: counted from disk when a tenant is first seen (jobs
outlive the server) and at a cap (other tools may have removed or ended jobs), kept up to
date by the requests in between. Everything here but the pool's workers runs on the event
loop's thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobber._jobs.store import JobStore

__all__ = ["Quotas", "QuotaExceeded", "FairPool", "Tenant", "Tenants"]


@dataclass(frozen=True)
class Quotas:
    """The caps per certificate (``jobber serve --max-running-jobs ...``).

    Attributes:
        max_running_jobs: jobs started and not ended yet, at once.
        max_jobs: jobs kept (created, running or ended, until removed or pruned).
        max_requests_in_flight: requests being answered at once (follows and waits count).
    """

    max_running_jobs: int = 64
    max_jobs: int = 10_000
    max_requests_in_flight: int = 256

    def __post_init__(self) -> None:
        for name in ("max_running_jobs", "max_jobs", "max_requests_in_flight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a whole number of at least 1, not {value!r}")


class QuotaExceeded(Exception):
    """A tenant is at one of its caps: answered 429 with the cap's name and value."""

    def __init__(self, quota: str, limit: int, message: str) -> None:
        super().__init__(message)
        self.quota = quota
        self.limit = limit


class _Call:
    __slots__ = ("fn", "args", "future", "loop", "must_run")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], future: asyncio.Future[Any],
                 loop: asyncio.AbstractEventLoop, must_run: bool) -> None:
        self.fn, self.args, self.future, self.loop, self.must_run = fn, args, future, loop, must_run


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return  # cancelled meanwhile: its caller is gone
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class FairPool:
    """Worker threads shared by all tenants, taken from the tenants in turn.

    Args:
        threads: the most threads (started as needed, kept until ``close``).
        per_tenant: the most calls of one tenant running at once; the rest of its calls
            queue behind the other tenants' turns. Keep it well below ``threads``.
        name: the threads' name prefix.
    """

    def __init__(self, threads: int = 32, per_tenant: int = 4, name: str = "jobber-work") -> None:
        self._max_threads = threads
        self._per_tenant = max(1, min(per_tenant, threads))
        self._name = name
        self._cond = threading.Condition()
        self._queues: OrderedDict[str, deque[_Call]] = OrderedDict()  # tenants with queued calls, next first
        self._running: dict[str, int] = {}
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    async def run(self, tenant: str, fn: Callable[..., Any], *args: Any, must_run: bool = False) -> Any:
        """Run ``fn(*args)`` in a worker on behalf of ``tenant`` and return its result.

        Args:
            must_run: run it even if the caller is cancelled meanwhile (a start, a
                creation: their bookkeeping is in ``submit``'s future callbacks). Other
                calls still queued when their caller is cancelled are dropped.
        """
        future = self.submit(tenant, fn, *args, must_run=must_run)
        return await (asyncio.shield(future) if must_run else future)

    def submit(self, tenant: str, fn: Callable[..., Any], *args: Any, must_run: bool = False) -> asyncio.Future[Any]:
        """Queue ``fn(*args)``; the future (of the running loop) gets its result or exception.

        Raises:
            RuntimeError: the pool is closed.
        """
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the server is shutting down")
            self._queues.setdefault(tenant, deque()).append(_Call(fn, args, future, loop, must_run))
            if self._idle == 0 and len(self._threads) < self._max_threads:
                thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=False)
                self._threads.append(thread)
                thread.start()
            else:
                self._cond.notify()
        return future

    def queued(self, tenant: str) -> int:
        """Calls of ``tenant`` waiting for a thread (for tests and the debug log)."""
        with self._cond:
            return len(self._queues.get(tenant, ()))

    def _next(self) -> tuple[str, _Call] | None:
        """The next call to run, taken in turn from tenants below their cap (lock held)."""
        for tenant, queue in self._queues.items():
            if self._running.get(tenant, 0) >= self._per_tenant:
                continue
            call = queue.popleft()
            if queue:
                self._queues.move_to_end(tenant)  # its next call waits for the others' turn
            else:
                del self._queues[tenant]
            self._running[tenant] = self._running.get(tenant, 0) + 1
            return tenant, call
        return None

    def _work(self) -> None:
        while True:
            with self._cond:
                while (picked := self._next()) is None:
                    if self._closed:
                        return
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
            tenant, call = picked
            try:
                if call.must_run or not call.future.cancelled():
                    try:
                        ok, value = True, call.fn(*call.args)
                    except BaseException as err:  # noqa: BLE001 - handed to the caller
                        ok, value = False, err
                    try:
                        call.loop.call_soon_threadsafe(_settle, call.future, ok, value)
                    except RuntimeError:
                        pass  # the loop is closed: nobody is waiting any more
            finally:
                with self._cond:
                    left = self._running[tenant] - 1
                    if left:
                        self._running[tenant] = left
                    else:
                        del self._running[tenant]
                    if self._queues.get(tenant):
                        self._cond.notify()  # that tenant's next call may run now

    def close(self) -> None:
        """Cancel what is queued and let the threads go once their current calls return."""
        with self._cond:
            self._closed = True
            queued = [call for queue in self._queues.values() for call in queue]
            self._queues.clear()
            self._cond.notify_all()
        for call in queued:
            try:
                call.loop.call_soon_threadsafe(call.future.cancel)
            except RuntimeError:
                pass


class Tenant:
    """One certificate's counts, as this server knows them (event loop thread only).

    ``running`` and ``kept`` are None until first counted from disk.
    """

    __slots__ = ("owner", "in_flight", "running", "starting", "kept", "creating")

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.in_flight = 0
        self.running: set[int] | None = None
        self.starting = 0
        self.kept: int | None = None
        self.creating = 0

    @property
    def idle(self) -> bool:
        return not (self.in_flight or self.starting or self.creating)


def _running_ids(store: JobStore, ids: set[int] | None) -> set[int]:
    """Of ``ids`` (None: every job of the store), those started and not ended."""
    jobs = store.get_jobs() if ids is None else [store.get_job(i) for i in ids if (store.path / str(i)).is_dir()]
    alive = set()
    for job in jobs:
        try:
            status = job.status()
        except Exception:  # noqa: BLE001 - unreadable: it cannot be running either
            continue
        if not status.ended and status.state != "created":
            alive.add(job.id)
    return alive


def _kept(store: JobStore) -> int:
    return len(store.get_jobs())


class Tenants:
    """The tenants seen, and the checks of their caps.

    Args:
        quotas: the caps.
        pool: where disk counts run (on the tenant's own turn).
        remembered: tenants kept when idle; beyond, the least recently seen idle ones
            are forgotten (and counted from disk again if they return).
    """

    def __init__(self, quotas: Quotas, pool: FairPool, remembered: int = 4096) -> None:
        self.quotas = quotas
        self._pool = pool
        self._remembered = remembered
        self._tenants: OrderedDict[str, Tenant] = OrderedDict()

    def get(self, owner: str) -> Tenant:
        tenant = self._tenants.get(owner)
        if tenant is None:
            tenant = self._tenants[owner] = Tenant(owner)
            if len(self._tenants) > self._remembered:
                for key in [k for k, t in self._tenants.items() if t.idle][: len(self._tenants) - self._remembered]:
                    del self._tenants[key]
        else:
            self._tenants.move_to_end(owner)
        return tenant

    def enter(self, tenant: Tenant) -> None:
        """Count a request in flight, or raise QuotaExceeded; pair with ``leave``."""
        cap = self.quotas.max_requests_in_flight
        if tenant.in_flight >= cap:
            raise QuotaExceeded(
                "max_requests_in_flight", cap,
                f"this certificate has {tenant.in_flight} requests in flight, the most the server allows at once "
                f"(max_requests_in_flight {cap}): wait for some to be answered (follows and waits count too), "
                "then retry")
        tenant.in_flight += 1

    def leave(self, tenant: Tenant) -> None:
        tenant.in_flight -= 1

    async def reserve_job(self, tenant: Tenant, store: JobStore) -> None:
        """Make room for one more kept job, or raise QuotaExceeded; pair with ``job_created``."""
        cap = self.quotas.max_jobs
        if tenant.kept is None or tenant.kept + tenant.creating >= cap:
            tenant.kept = await self._pool.run(tenant.owner, _kept, store)  # removed by other tools meanwhile?
        if tenant.kept + tenant.creating >= cap:
            raise QuotaExceeded(
                "max_jobs", cap,
                f"this certificate keeps {tenant.kept} jobs, the most the server allows (max_jobs {cap}): "
                "remove ended jobs (DELETE /v1/jobs/ID, `jobber rm ID`, job.remove()) or prune them "
                "(POST /v1/jobs:prune, `jobber prune`, prune()) to make room")
        tenant.creating += 1

    def job_created(self, tenant: Tenant, created: bool) -> None:
        tenant.creating -= 1
        if created and tenant.kept is not None:
            tenant.kept += 1

    def job_removed(self, tenant: Tenant, job_id: int) -> None:
        """One job's directory is gone (``DELETE /v1/jobs/ID``): its room is free at once."""
        self.jobs_removed(tenant, [job_id])

    def jobs_removed(self, tenant: Tenant, job_ids: list[int]) -> None:
        """These jobs' directories are gone (a remove, a prune): their room is free at once."""
        if tenant.kept is not None:
            tenant.kept = max(0, tenant.kept - len(job_ids))
        if tenant.running is not None:
            tenant.running.difference_update(job_ids)

    async def reserve_start(self, tenant: Tenant, store: JobStore) -> None:
        """Make room for one more running job, or raise QuotaExceeded; pair with ``job_started``."""
        cap = self.quotas.max_running_jobs
        if tenant.running is None:
            found = await self._pool.run(tenant.owner, _running_ids, store, None)
            tenant.running = found if tenant.running is None else tenant.running | found
        if len(tenant.running) + tenant.starting >= cap:
            known = set(tenant.running)
            alive = await self._pool.run(tenant.owner, _running_ids, store, known)
            tenant.running -= known - alive  # those that ended; starts made meanwhile stay
        if len(tenant.running) + tenant.starting >= cap:
            raise QuotaExceeded(
                "max_running_jobs", cap,
                f"this certificate has {len(tenant.running) + tenant.starting} jobs running, the most the server "
                f"allows at once (max_running_jobs {cap}): wait for one to end, or stop one, then start again")
        tenant.starting += 1

    def job_started(self, tenant: Tenant, job_id: int, started: bool) -> None:
        tenant.starting -= 1
        if started and tenant.running is not None:
            tenant.running.add(job_id)
