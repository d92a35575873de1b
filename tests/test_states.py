"""How a job ended: every row of ``_states.outcome``'s decision, and ``_states.ended``."""

from __future__ import annotations

import signal
import time

import pytest

from jobber._states import FINAL_STATES, STATES, ended, outcome


def exited(code: int) -> int:
    """The wait status of a process that exited with ``code``."""
    return code << 8


def killed(sig: int) -> int:
    """The wait status of a process that a signal ended."""
    return sig


KILL, TERM = int(signal.SIGKILL), int(signal.SIGTERM)


class TestOutcome:
    # wait status, stopped, oom, timed_out -> state, exit_code, signal
    @pytest.mark.parametrize(("wait_status", "stopped", "oom", "timed_out", "state", "exit_code", "sig"), [
        # nothing else known: the exit decides
        (exited(0), False, False, False, "exited", 0, None),
        (exited(1), False, False, False, "failed", 1, None),
        (exited(137), False, False, False, "failed", 137, None),
        (killed(TERM), False, False, False, "failed", None, TERM),
        (killed(KILL), False, False, False, "failed", None, KILL),
        # the OOM killer struck: it ended the job unless the job exited 0 all the same
        (killed(KILL), False, True, False, "oom-killed", None, KILL),
        (exited(1), False, True, False, "oom-killed", 1, None),
        (exited(0), False, True, False, "exited", 0, None),
        # its time limit was up: the supervisor stopped it, whatever its exit and the OOM killer
        (killed(TERM), False, False, True, "timed-out", None, TERM),
        (exited(0), False, False, True, "timed-out", 0, None),
        (killed(KILL), False, True, True, "timed-out", None, KILL),
        # a stop was asked for: it wins over everything, the time limit included
        (killed(TERM), True, False, False, "stopped", None, TERM),
        (exited(0), True, False, False, "stopped", 0, None),
        (exited(3), True, True, False, "stopped", 3, None),
        (killed(KILL), True, True, True, "stopped", None, KILL),
    ])
    def test_every_row(self, wait_status, stopped, oom, timed_out, state, exit_code, sig):
        assert outcome(wait_status, stopped=stopped, oom=oom, timed_out=timed_out) == {
            "state": state, "exit_code": exit_code, "signal": sig, "oom_killed": oom}

    def test_timed_out_defaults_to_false(self):
        assert outcome(exited(0), stopped=False, oom=False)["state"] == "exited"

    @pytest.mark.parametrize("stopped", [False, True])
    @pytest.mark.parametrize("oom", [False, True])
    @pytest.mark.parametrize("timed_out", [False, True])
    @pytest.mark.parametrize("wait_status", [exited(0), exited(2), killed(TERM), killed(KILL)])
    def test_always_a_final_state_and_exactly_one_of_code_and_signal(self, wait_status, stopped, oom, timed_out):
        result = outcome(wait_status, stopped=stopped, oom=oom, timed_out=timed_out)
        assert result["state"] in FINAL_STATES
        assert (result["exit_code"] is None) != (result["signal"] is None)


class TestEnded:
    def test_the_record_of_an_ending_no_wait_status_tells(self):
        before = time.time()
        record = ended("failed", "job 3 did not start: OSError: boom")
        assert before <= record.pop("ended_at") <= time.time()
        assert record == {"state": "failed", "exit_code": None, "signal": None, "oom_killed": False,
                          "error": "job 3 did not start: OSError: boom"}

    def test_what_is_known_is_kept(self):
        assert ended("failed", "could not exec", exit_code=127, oom_killed=True, ended_at=12.5) == {
            "state": "failed", "exit_code": 127, "signal": None, "oom_killed": True, "ended_at": 12.5,
            "error": "could not exec"}

    @pytest.mark.parametrize("state", sorted(FINAL_STATES))
    def test_every_final_state(self, state):
        assert ended(state, "why")["state"] == state

    @pytest.mark.parametrize("state", sorted(set(STATES) - FINAL_STATES) + ["done"])
    def test_only_a_final_state(self, state):
        with pytest.raises(ValueError, match=f"'{state}' is not a final state"):
            ended(state, "why")
