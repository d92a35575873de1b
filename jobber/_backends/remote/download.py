"""A large result's pickle from a jobber server, unpickled as it arrives.

``pickle.load`` reads the response itself: a numpy array's buffer goes from the socket
straight into the array's own memory, so the client holds the result once, not its bytes
and then the result made from them (a 1 GB result would need 2 GB). Unpickling stays the
owner's client's (``jobber._jobs.pycall.load_result``); this module only reads.
"""

from __future__ import annotations

import http.client
from typing import TYPE_CHECKING, Any

from jobber._errors import JobError

if TYPE_CHECKING:
    from jobber._backends.remote.transport import Transport

__all__ = ["STREAM_FROM", "ResultDownload", "open_result"]

STREAM_FROM = 1 << 20  # bytes: a result this large is unpickled as it arrives


def open_result(transport: Transport, path: str, size: int, job_id: int, timeout: float) -> ResultDownload:
    """The pickle at ``path`` (``GET /v1/jobs/ID/result/pickle``), open on a connection of its own.

    Args:
        transport: the session's transport.
        path: the API path of the pickle.
        size: its length, as the result's description gives it.
        job_id: the job, for messages.
        timeout: seconds any one read may wait (a stalled transfer fails rather than hangs).

    Returns:
        A binary file for ``pickle.load``, which ``load_result`` closes.

    Raises:
        JobError: the server sends another length than ``size``. JobberError: as
            ``Transport.stream``.
    """
    conn, response = transport.stream(path, {})
    conn.sock.settimeout(timeout)
    length = response.getheader("Content-Length")
    if length != str(size):
        conn.close()
        raise JobError(f"job {job_id}'s result comes {length or 'of no stated length'} bytes long, not the {size} its "
                       "description says: ask again (job.result())", job_id=job_id)
    return ResultDownload(conn, response, job_id, size)


class ResultDownload:
    """The response's body as a binary file (``read``, ``readinto``, ``readline``) of
    ``size`` bytes, whose connection closes with it. A transfer that breaks off (an error,
    or the body ending short, which ``http.client`` reads as a short read) raises
    ``JobError`` saying so, not whatever ``pickle`` would make of the short read."""

    def __init__(self, conn: http.client.HTTPSConnection, response: http.client.HTTPResponse, job_id: int,
                 size: int) -> None:
        self._conn, self._response, self._job_id, self._size, self._left = conn, response, job_id, size, size

    def read(self, size: int = -1) -> bytes:
        wanted = self._left if size < 0 else min(size, self._left)
        return self._counted(self._response.read, wanted, wanted)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")[: self._left]
        return self._counted(self._response.readinto, view, len(view))

    def readline(self, limit: int = -1) -> bytes:
        return self._counted(self._response.readline, limit, 0)

    def close(self) -> None:
        self._response.close()
        self._conn.close()

    def _counted(self, read: Any, arg: Any, wanted: int) -> Any:
        try:
            got = read(arg)
        except (OSError, http.client.HTTPException) as err:
            self.close()
            raise self._broken(f"{type(err).__name__}: {err}") from err
        count = got if isinstance(got, int) else len(got)
        self._left -= count
        if count < wanted:
            self.close()
            raise self._broken("the connection closed early")
        return got

    def _broken(self, why: str) -> JobError:
        return JobError(f"job {self._job_id}'s result stopped arriving after {self._size - self._left} of its "
                        f"{self._size} bytes ({why}): ask again (job.result())", job_id=self._job_id)
