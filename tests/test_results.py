"""A function job's result read back on this host: ``jobber._jobs.results`` and ``load_result``.

Real jobs (the runner writes ``result.pkl`` and ``result.json``), read as ``Job.result``
reads them: a large result is unpickled from its open file (a numpy array's buffer read
straight into the array's memory), which ``load_result`` closes whatever happens; a file
of another length than its description says is refused, never unpickled.
"""

from __future__ import annotations

import os
import pickle

import numpy
import pytest

from jobber import JobError, RemoteError
from jobber._jobs.pycall import RESULT, load_result

WAIT_S = 300.0  # a deadline, never a measure
MiB = 1 << 20


def array_of(nbytes, fill):
    import numpy

    return numpy.full(nbytes, fill, dtype=numpy.uint8)


def held(job) -> list[str]:
    """This process's descriptors open on the job's files."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the listing's own descriptor, closed since
            continue
        if target.startswith(str(job.path)):
            found.append(target)
    return found


def ended_job(store, fn, *args):
    with store.executor() as ex:
        fut = ex.submit(fn, *args)
        fut.exception(WAIT_S)
    return fut.job


def read(job):
    """``Job.result``'s read (``results.read_result`` on this host), without its unpickling."""
    return job._backend.read_result()


class TestLargeResults:
    def test_an_array_comes_back_whole_writable_and_its_own_each_time(self, store):
        job = ended_job(store, array_of, 8 * MiB, 7)
        first, second = job.result(), job.result()
        assert first.nbytes == 8 * MiB and (first == 7).all()
        assert first.flags.writeable
        first[:] = 1  # each read is a copy of its own: the file and the other read are untouched
        assert (second == 7).all() and (job.result() == 7).all()

    def test_a_large_one_is_handed_over_open_and_load_result_closes_it(self, store):
        job = ended_job(store, array_of, 2 * MiB, 3)
        meta, data = read(job)
        assert not isinstance(data, (bytes, bytearray, memoryview)) and held(job) == [str(job.path / RESULT)]
        assert (load_result(meta, data, job.id) == 3).all()
        assert data.closed and held(job) == []

    def test_a_small_one_is_read_whole(self, store):
        job = ended_job(store, array_of, 1000, 5)
        meta, data = read(job)
        assert isinstance(data, bytes) and held(job) == []
        assert (load_result(meta, data, job.id) == 5).all()

    def test_a_file_that_does_not_unpickle_is_closed_too(self, store):
        job = ended_job(store, array_of, 2 * MiB, 3)
        path = job.path / RESULT
        size = path.stat().st_size
        path.write_bytes(b"\x00" * size)  # as long as its description says, but no pickle
        with pytest.raises(RemoteError, match="cannot be unpickled here"):
            job.result()
        assert held(job) == []

    @pytest.mark.parametrize("nbytes", [1000, 4 * MiB])
    def test_a_file_cut_short_is_refused_not_unpickled(self, store, nbytes):
        job = ended_job(store, array_of, nbytes, 9)
        path = job.path / RESULT
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
        with pytest.raises(JobError, match=rf"result file is {len(whole) // 2} bytes, not the {len(whole)} its "
                                           r"description says \(cut short"):
            job.result()
        assert held(job) == []
        path.write_bytes(whole)
        assert (job.result() == 9).all()

    def test_the_file_is_a_plain_protocol_5_pickle(self, store):
        """What any client (or the server's HTTP route) gets: loadable by ``pickle.loads``."""
        job = ended_job(store, array_of, 2 * MiB, 4)
        data = (job.path / RESULT).read_bytes()
        assert data[:2] == b"\x80\x05"
        assert isinstance(pickle.loads(data), numpy.ndarray)


class TestADownloadThatBreaksOff:
    """A remote result unpickled as it arrives (``jobber._backends.remote.download``): a
    transfer that breaks raises ``JobError`` saying so, never an unpickling error, and its
    connection is closed. The whole path over a real server: tests/test_server_functions.py."""

    class Broken:
        """A response whose connection closes after ``cut`` bytes (``http.client`` then
        reads short), or whose reads fail with ``error``."""

        def __init__(self, whole: bytes, cut: int, error: Exception | None = None) -> None:
            self.data, self.error, self.closed = whole[:cut], error, False

        def read(self, size):
            if self.error:
                raise self.error
            part, self.data = self.data[:size], self.data[size:]
            return part

        def readinto(self, buffer):
            part = self.read(len(buffer))
            buffer[: len(part)] = part
            return len(part)

        def readline(self, limit=-1):
            return self.read(limit)

        def close(self):
            self.closed = True

    @pytest.mark.parametrize("cut, error, why", [(100, None, "after 100 of its .* bytes .the connection closed early"),
                                                 (10_000, TimeoutError("timed out"), "after 0 of its .* bytes .TimeoutError: timed out")])
    def test_it_is_a_job_error_and_the_connection_closes(self, cut, error, why):
        from jobber._backends.remote.download import ResultDownload

        whole = pickle.dumps(array_of(2 * MiB, 1), protocol=5)
        response, conn = self.Broken(whole, cut, error), self.Broken(b"", 0)
        download = ResultDownload(conn, response, 7, len(whole))
        with pytest.raises(JobError, match=f"job 7's result stopped arriving {why}.*ask again") as err:
            load_result({"ok": True, "type": "numpy.ndarray", "size": len(whole)}, download, 7)
        assert not isinstance(err.value, RemoteError)
        assert response.closed and conn.closed

    def test_a_whole_one_loads(self):
        from jobber._backends.remote.download import ResultDownload

        whole = pickle.dumps(array_of(2 * MiB, 1), protocol=5)
        response, conn = self.Broken(whole, len(whole)), self.Broken(b"", 0)
        value = load_result({"ok": True, "size": len(whole)}, ResultDownload(conn, response, 7, len(whole)), 7)
        assert (value == 1).all() and value.nbytes == 2 * MiB
        assert response.closed and conn.closed
