"""A real ipykernel driven over jupyter_client, as a browser would: shared by the kernel tests.

What a browser would see is read off the iopub channel: widget state arrives as
``comm_msg`` "update" messages, and a click is a ``comm_msg`` sent back to the kernel.
"""

from __future__ import annotations

import queue
import re
import time
from dataclasses import dataclass, field

from jupyter_client import KernelManager


@dataclass
class Message:
    at: float  # time.monotonic() when the test received it
    raw: dict

    @property
    def type(self) -> str:
        return self.raw["msg_type"]

    @property
    def content(self) -> dict:
        return self.raw["content"]


@dataclass
class Kernel:
    """An ipykernel with a client; every iopub message received is kept in ``messages``."""

    manager: KernelManager
    messages: list[Message] = field(default_factory=list)

    @classmethod
    def start(cls, *arguments: str) -> Kernel:
        manager = KernelManager(kernel_name="python3")
        manager.start_kernel(extra_arguments=list(arguments))
        kernel = cls(manager)
        kernel.client = manager.client()
        kernel.client.start_channels()
        kernel.client.wait_for_ready(timeout=60)
        return kernel

    def shutdown(self, now: bool = False) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=now)

    def receive(self, timeout: float) -> Message | None:
        try:
            raw = self.client.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            return None
        message = Message(time.monotonic(), raw)
        self.messages.append(message)
        return message

    def execute(self, code: str, timeout: float = 60) -> tuple[dict, list[Message]]:
        """Run a cell; return its reply and the iopub messages it caused, up to idle."""
        msg_id = self.client.execute(code)
        own = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.receive(1)
            if message is None or message.raw["parent_header"].get("msg_id") != msg_id:
                continue
            own.append(message)
            if message.type == "status" and message.content["execution_state"] == "idle":
                while (reply := self.client.get_shell_msg(timeout=timeout))["parent_header"].get("msg_id") != msg_id:
                    pass  # e.g. the kernel_info_reply of wait_for_ready
                return reply["content"], own
        raise AssertionError(f"no reply to {code!r}")

    def receive_until(self, predicate, timeout: float = 30) -> Message:
        """Receive until a message satisfies ``predicate`` (earlier ones are checked first)."""
        for message in self.messages:
            if predicate(message):
                return message
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.receive(0.5)
            if message is not None and predicate(message):
                return message
        raise AssertionError("the expected message never came")

    def view_of(self, job_id: int) -> str:
        """The comm id of the last live view (jobber's anywidget model) opened for a job."""
        for message in reversed(self.messages):
            if message.type == "comm_open":
                state = message.content["data"]["state"]
                if state.get("_model_name") == "AnyModel" and state.get("job_id") == job_id:
                    return message.content["comm_id"]
        raise AssertionError(f"no live view of job {job_id} was opened")

    def updates(self, comm_id: str) -> list[Message]:
        """State updates of one widget, as a frontend receives them."""
        return [m for m in self.messages if m.type == "comm_msg" and m.content["comm_id"] == comm_id
                and m.content["data"].get("method") == "update"]

    def frames(self, comm_id: str) -> list[Message]:
        """The log frames (custom messages) sent to one live view."""
        return [m for m in self.messages if m.type == "comm_msg" and m.content["comm_id"] == comm_id
                and m.content["data"].get("method") == "custom" and m.content["data"]["content"].get("kind") == "log"]

    def shown_lines(self, comm_id: str, after_frame: int = -1, start: list[str] | None = None) -> list[str]:
        """The log lines a browser shows after applying the frames (as _jobview.js does)."""
        lines = list(start or [])
        for message in self.frames(comm_id):
            frame = message.content["data"]["content"]
            if frame["frame"] <= after_frame:
                continue
            lines = list(frame["lines"]) if frame["reset"] else lines + frame["lines"]
        return lines

    def status_line(self, comm_id: str) -> str:
        """The latest status line the view got."""
        for message in reversed(self.updates(comm_id)):
            if "status_html" in message.content["data"]["state"]:
                return message.content["data"]["state"]["status_html"]
        return ""

    def follow_ticks(self, view: str, job, last: int, timeout: float) -> tuple[list[int], set[int]]:
        """Follow the live view of a job that prints "tick 1" to "tick LAST", until the
        view shows the last tick or ``timeout`` seconds pass.

        Returns:
            The ticks shown at the end, and the highest tick shown after each frame that came
            while the job was running.
        """
        handled, ticks, while_running = 0, [], set()
        deadline = time.monotonic() + timeout
        while last not in ticks and time.monotonic() < deadline:
            self.receive(0.5)
            frames = self.frames(view)
            if len(frames) > handled:
                handled = len(frames)
                ticks = [int(n) for n in re.findall(r"tick (\d+)", "\n".join(self.shown_lines(view)))]
                # The status is read after the frame came: "running" now means running then.
                if ticks and job.status().state == "running":
                    while_running.add(max(ticks))
        return ticks, while_running

    def send_comm(self, comm_id: str, data: dict) -> None:
        self.client.shell_channel.send(self.client.session.msg("comm_msg", {"comm_id": comm_id, "data": data}))


def value(update: Message) -> str:
    """The status line of a state update ("" if it has none)."""
    return update.content["data"].get("state", {}).get("status_html", "")


def lines_read(status_line: str) -> int:
    found = re.search(r"([\d,]+) lines?\b", status_line)
    return int(found.group(1).replace(",", "")) if found else 0


def job_id_of(messages: list[Message]) -> int:
    """The job a %%jobber_run cell started: from its one output (the view, or --no-follow's line)."""
    for message in messages:
        if message.type == "execute_result":
            return int(re.match(r"job (\d+) ", message.content["data"]["text/plain"]).group(1))
        if message.type == "stream" and (found := re.search(r"^job (\d+) started: ", message.content["text"], re.M)):
            return int(found.group(1))
    raise AssertionError("the cell started no job")


def outputs(messages: list[Message]) -> list[Message]:
    """The messages of a cell that become outputs in the notebook."""
    return [m for m in messages if m.type in ("execute_result", "display_data", "stream", "error")]
