"""What each node of the participant workflow does, carried by the node itself.

The terminal's progress and the closing summary read :class:`Step` (``node.bidsapp_step``) and
the crash the runner reported (``node.bidsapp_traceback``): never the node's name, never the
runner's folders.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """One node's part in the run of an image.

    ``label`` is shown on the terminal (None: bookkeeping, such as sinks and merges, reported only
    when it crashes); ``defacers`` are the defacer results the node gates (a crash of the node
    explains why they are missing); ``record``: the node's ``record`` output is a defacer's
    record (status, time, memory); ``report``: the node draws the report of the participant
    ``image`` names (``sub-<label>``).
    """

    image: str
    label: str | None = None
    defacers: tuple[str, ...] = ()
    record: bool = False
    report: bool = False


def tag(node, step: Step):
    """Attach ``step`` to a nipype node; return the node."""
    node.bidsapp_step = step
    return node


def step_of(node) -> Step | None:
    return getattr(node, "bidsapp_step", None)
