"""What the face metrics saw of one defaced head, kept for the participant report.

The metrics step builds each defaced head's mask on the original's world grid and renders it
for the face detector. :func:`save_seen` keeps both (the mask bit-packed, the render of the view
where the detector found its best face) in the metrics step's working folder, and the report
draws its 3D renders and the detector's view from them (:func:`load_seen`), so the report shows
the head that was measured, at the threshold it was measured with, and never builds it again.
Only defaced heads are kept: never the original's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bidsapp.bids import derivative_stem


@dataclass(frozen=True)
class Seen:
    """A defaced head mask on a world grid (``affine``); the detector's render and view."""

    head: np.ndarray
    affine: np.ndarray
    detection_view: str | None = None
    detection_image: np.ndarray | None = None


def seen_path(folder: Path, image_key: str, defacer: str) -> Path:
    """Where the metrics step keeps what it saw of ``defacer``'s output of ``image_key``."""
    return Path(folder) / f"{derivative_stem(image_key, desc=defacer)}_seen.npz"


def save_seen(path: Path, head: np.ndarray, affine: np.ndarray, faces=None) -> Path:
    """Write ``head`` (bool, world grid) and the render of ``faces``' best view (if any)."""
    best = faces.best if faces is not None else None
    extra = {}
    if best is not None:
        extra = {"detection_view": np.array(best.view),
                 "detection_image": faces.renders[best.view].image.astype(np.uint8)}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.npz")
    np.savez_compressed(partial, head=np.packbits(head.astype(bool), axis=None),
                        shape=np.array(head.shape), affine=np.asarray(affine, dtype=float),
                        **extra)
    partial.replace(path)
    return path


def load_seen(path: Path) -> Seen:
    with np.load(path) as stored:
        shape = tuple(int(n) for n in stored["shape"])
        head = np.unpackbits(stored["head"], count=int(np.prod(shape))).reshape(shape) > 0
        view = str(stored["detection_view"]) if "detection_view" in stored else None
        image = stored["detection_image"] if "detection_image" in stored else None
        return Seen(head, stored["affine"], view, image)


def find_seen(folders, image_key: str, defacer: str) -> Path | None:
    """The first of ``folders`` that holds what was seen of this result (None: none does)."""
    for folder in folders or ():
        path = seen_path(Path(folder), image_key, defacer)
        if path.is_file():
            return path
    return None
