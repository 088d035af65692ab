"""The participant report's figures: mosaics, renders and the detector's view, each built only
when missing or older than its inputs (and never left half written)."""

from __future__ import annotations

import logging
from pathlib import Path

from bidsapp.io import atomic_path
from bidsapp.reports import data_uri

LOGGER = logging.getLogger("bidsapp")


def _stale(target: Path, sources: list[Path]) -> bool:
    if not target.is_file():
        return True
    newest = max((p.stat().st_mtime for p in sources if p.is_file()), default=0.0)
    return target.stat().st_mtime < newest


class Figures:
    """Makes (or reuses, when newer than their inputs) the figures of one participant."""

    def __init__(self, output_dir: Path):
        self.output_dir = output_dir
        self.errors: list[dict[str, str]] = []

    def make(self, target: Path, sources: list[Path], build, what: str) -> str | None:
        """Data URI of ``target``, building it first when missing or stale; None on failure."""
        try:
            if _stale(target, sources):
                with atomic_path(target) as partial:  # a killed run leaves no broken figure
                    build(partial)
            return data_uri(target)
        except Exception as exc:  # a figure must never break the report
            LOGGER.warning("report figure %s failed: %s", target.name, exc)
            self.errors.append({"where": what, "error": f"figure not made: {exc}",
                                "log": None})
            return None


def cameras(brain: Path | None):
    from bidsapp.reports import plots

    if brain is None or not brain.is_file():
        return None
    try:
        return plots.brain_cameras(brain)
    except Exception as exc:
        LOGGER.debug("no cameras from %s: %s", brain, exc)
        return None


class Seen:
    """Finds the defaced heads the metrics step kept (:mod:`bidsapp.metrics.seen`)."""

    def __init__(self, folders):
        self.folders = [Path(f) for f in folders or ()]

    def get(self, image_key: str, defacer: str) -> Path | None:
        from bidsapp.metrics.seen import find_seen

        return find_seen(self.folders, image_key, defacer) if self.folders else None


def render_builder(image: Path, brain: Path | None, cams, seen: Path | None = None):
    """Renders of ``image``'s head: the head the metrics measured when ``seen`` is given, else
    built here the way the metrics build it."""
    from bidsapp.reports import plots

    def build(target: Path) -> None:
        if seen is not None:
            from bidsapp.metrics import render
            from bidsapp.metrics.seen import load_seen

            kept = load_seen(seen)
            mesh = render.skin_mesh(kept.head, kept.affine)
        else:
            mesh = plots.head_mesh(image, brain if brain is not None and brain.is_file()
                                   else None)
        plots.plot_renders(mesh, target, camera_by_view=cams or plots.cameras([mesh]))
    return build


def mosaic_builder(image: Path, altered: Path | None, brain: Path | None):
    from bidsapp.reports import plots

    def build(target: Path) -> None:
        plots.plot_mosaic(image, altered if altered is not None and altered.is_file() else None,
                          brain if brain is not None and brain.is_file() else None, target)
    return build


class Framing:
    """The face-framed cameras of one original, derived once per report (on first use)."""

    def __init__(self, original: Path | None, brain: Path | None):
        self.original, self.brain = original, brain
        self._framed = None

    def get(self):
        if self._framed is None:
            import nibabel as nib
            import numpy as np

            from bidsapp.metrics.reference import face_framing

            if self.original is None or self.brain is None:
                raise FileNotFoundError("the original image or its brain mask is not found "
                                        "(pass bids_dir)")
            mask = np.asanyarray(nib.load(str(self.brain)).dataobj) > 0
            reference, _, cameras = face_framing(nib.load(str(self.original)), mask)
            self._framed = reference, cameras
        return self._framed


def detection_builder(framing: Framing, defaced: Path, view: str, box, seen: Path | None = None):
    """The detector's render of the defaced head from ``view``, with its box drawn.

    The render the detector saw, when the metrics step kept it (``seen``); else the camera is
    re-derived from the original (its framing on the face), as the participant level derived
    it. Only the defaced head is rendered, never the original.
    """
    def build(target: Path) -> None:
        import nibabel as nib

        from bidsapp.metrics.reference import defaced_render
        from bidsapp.reports import plots

        if seen is not None:
            from bidsapp.metrics.seen import load_seen

            kept = load_seen(seen)
            if kept.detection_view == view and kept.detection_image is not None:
                plots.plot_detection(kept.detection_image, box, target)
                return
        reference, cameras = framing.get()
        if view not in cameras:
            raise ValueError(f"view {view} is not one of the original's views")
        rendered = defaced_render(reference, nib.load(str(defaced)), cameras[view])
        plots.plot_detection(rendered.image, box, target)
    return build
