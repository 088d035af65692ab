"""Progress on the terminal while the workflow runs, and which crashed step explains a missing
result; both from what the nodes carry (:class:`bidsapp.workflows.steps.Step`, the crash the
runner set on the node), never from node names or the runner's folders."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from bidsapp.workflows.steps import step_of

LOGGER = logging.getLogger("bidsapp")


@dataclass(frozen=True)
class Crashed:
    """A node that crashed; the runner sets its traceback on it after the status callback."""

    node: Any

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def reason(self) -> str:
        return crash_reason(getattr(self.node, "bidsapp_traceback", None))

    def explains(self, image_key: str, defacer: str) -> bool:
        """Whether this crash is why ``defacer``'s result of ``image_key`` is missing."""
        step = step_of(self.node)
        return step is not None and step.image == image_key and defacer in step.defacers


class Progress:
    """nipype status callback: what is running, done and failed, with the elapsed time.

    ``failures`` collects ``(name, "crash", Crashed, node folder)`` for each crashed node;
    ``reported`` the participants whose report step ended (drawn, or crashed and counted).
    """

    def __init__(self, workflow):
        self.start = time.time()
        nodes = (workflow.get_node(name) for name in workflow.list_node_names())
        self.total = sum(1 for node in nodes if (step_of(node) or _NO_STEP).label)
        self.done = self.failed = 0
        self.running: set[str] = set()
        self.failures: list[tuple] = []
        self.reported: set[str] = set()

    def __call__(self, node, status: str) -> None:
        step = step_of(node)
        if step is None or step.label is None:  # sinks and list merges: report crashes only
            if status == "exception":
                self._crashed(node)
            return
        label = step.label
        if status == "start":
            self.running.add(label)
            LOGGER.debug("[%s] started %s", self._clock(), label)
            return
        self.running.discard(label)
        if step.report:
            self.reported.add(step.image.removeprefix("sub-"))
        if status == "exception":
            self.failed += 1
            reason = self._crashed(node)
            LOGGER.error("[%s] FAILED %s: %s", self._clock(), label, reason)
        else:
            self.done += 1
            record = _record(node) if step.record else None
            if record and record.get("status") != "ok":
                self.failed += 1
                LOGGER.error("[%s] FAILED %s: %s", self._clock(), label, record.get("error"))
            else:
                extra = ""
                if record:
                    extra = f" ({record.get('wall_time_s', 0):.1f} s, " \
                            f"{record.get('peak_rss_mb', 0):.0f} MB)"
                LOGGER.info("[%s] done %s%s", self._clock(), label, extra)
        LOGGER.info("[%s] %d/%d done, %d failed, %d running", self._clock(), self.done,
                    self.total, self.failed, len(self.running))

    def _crashed(self, node) -> str:
        # nipype reports the crash after this callback: the summary reads the reason
        self.failures.append((node.name, "crash", Crashed(node), str(node.output_dir())))
        return "see the summary at the end"

    def _clock(self) -> str:
        seconds = int(time.time() - self.start)
        return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class _NoStep:
    label = None


_NO_STEP = _NoStep()


def _record(node) -> dict | None:
    """The defacer record a finished node returned (its ``record`` output), if any."""
    try:
        record = node.result.outputs.record
    except Exception:  # no result file, or no such output: nothing to show
        return None
    return record if isinstance(record, dict) else None


def crash_reason(traceback: str | None) -> str:
    """The error line of a crashed step's traceback (the last ``...Error: ...`` line).

    >>> crash_reason("Traceback:\\n  File 'x.py', line 1\\nOSError: disk full\\n")
    'the step crashed: OSError: disk full'
    """
    lines = [line.strip() for line in (traceback or "").splitlines()]
    errors = [line for line in lines if re.match(r"[\w.]+(Error|Exception|Died)\b", line)]
    errors = errors or [line for line in lines if line and not line.startswith(("File ", "^"))]
    return f"the step crashed: {errors[-1][:300]}" if errors else "the step crashed"
