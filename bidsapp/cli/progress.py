"""Progress on the terminal while the workflow runs, and which crashed step explains a missing
result."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

LOGGER = logging.getLogger("bidsapp")


class Progress:
    """nipype status callback: what is running, done and failed, with the elapsed time."""

    def __init__(self, workflow):
        self.start = time.time()
        graph = workflow._create_flat_graph()
        self.total = sum(1 for node in graph.nodes() if hasattr(node, "bidsapp_label"))
        self.done = self.failed = 0
        self.running: set[str] = set()
        self.failures: list[tuple] = []

    @staticmethod
    def _label(node) -> str:
        return getattr(node, "bidsapp_label", node.name)

    def __call__(self, node, status: str) -> None:
        if not hasattr(node, "bidsapp_label"):  # sinks and list merges: report crashes only
            if status == "exception":
                self._crashed(node)
            return
        label = self._label(node)
        if status == "start":
            self.running.add(label)
            LOGGER.debug("[%s] started %s", self._clock(), label)
            return
        self.running.discard(label)
        if status == "exception":
            self.failed += 1
            reason = self._crashed(node)
            LOGGER.error("[%s] FAILED %s: %s", self._clock(), label, reason)
        else:
            self.done += 1
            record = self._record(node)
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
        # nipype writes the crash file after this callback: the summary reads the reason
        self.failures.append((node.name, "crash", None, str(Path(node.output_dir()))))
        return "see the summary at the end"

    @staticmethod
    def _record(node) -> dict | None:
        if not node.name.startswith("deface_"):
            return None
        path = Path(node.output_dir()) / "run" / "record.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def _clock(self) -> str:
        seconds = int(time.time() - self.start)
        return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def crash_reason(log_dir: Path, node_name: str) -> str:
    """The last line of the newest nipype crash file of ``node_name``: the error itself."""
    crash_files = sorted(log_dir.glob(f"**/crash-*-{node_name}-*.txt"),
                         key=lambda path: path.stat().st_mtime)
    if not crash_files:
        return "the step crashed"
    try:
        lines = [line.strip() for line in crash_files[-1].read_text(errors="replace").splitlines()]
    except OSError:
        return "the step crashed"
    errors = [line for line in lines if re.match(r"[\w.]+(Error|Exception|Died)\b", line)]
    errors = errors or [line for line in lines if line and not line.startswith(("File ", "^"))]
    return f"the step crashed: {errors[-1][:300]}" if errors else "the step crashed"


def crashes_of(crashes: dict[str, str], image_key: str, defacer: str) -> list[str]:
    """Crashed nodes behind a missing result: the image's own steps or this defacer's."""
    from bidsapp.workflows.participant import node_name

    image_part = node_name("", image_key)
    return [name for name in crashes if name.endswith(image_part)
            and (f"_{defacer}_" in name or name.startswith(("brainmask_", "coreg_")))]
