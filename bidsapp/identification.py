"""The re-identification attack: can a face recogniser still find the person in a defaced image?

Designed after the studies that judge defacers (Schwarz et al. 2021, NeuroImage 231:117845):
renders of each head are matched with a face-recognition model (dlib's ResNet descriptors).
An attacker holds a photograph of the person, not the original scan, so

* the **gallery** is every original image of the dataset, summarised per participant;
* a **probe** is one defaced output (or, for the ceiling, one original);
* the **targets** are the probe's participant's *other* original images (another run, session
  or contrast); the probe's own original is never in the gallery. Its distance is reported
  apart, as a labelled upper bound (``same_scan_distance``): the rest of the head is the same
  scan, so it says more about the renders than about the face;
* the probe's **rank** is 1 + the number of other participants whose closest gallery image is
  closer than the closest target. A probe is **re-identified** when it ranks first and its
  distance is below :data:`MATCH_DISTANCE`, dlib's threshold for "same person".

A distance between two images is the smallest distance between descriptors of the same view
(views where either has no descriptor are skipped). Descriptors stay in memory: only distances,
ranks and counts leave this module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any
from dataclasses import dataclass

import numpy as np

#: dlib's recommended threshold: descriptors closer than this are "the same person".
MATCH_DISTANCE = 0.6
#: Ranks reported at the group level.
RANKS = (1, 5)

Descriptors = Mapping[str, np.ndarray]  # view name -> 128-d descriptor


def distance(probe: Descriptors, gallery: Descriptors) -> float:
    """Smallest Euclidean distance between same-view descriptors (NaN when none is shared).

    >>> a = {"front": np.zeros(2), "side": np.ones(2)}
    >>> distance(a, {"front": np.array([3.0, 4.0])}), distance(a, {"left": np.zeros(2)})
    (5.0, nan)
    """
    values = [float(np.linalg.norm(np.asarray(probe[v]) - np.asarray(gallery[v])))
              for v in probe if v in gallery and probe[v] is not None and gallery[v] is not None]
    return min(values) if values else float("nan")


@dataclass(frozen=True)
class GalleryImage:
    """One original image of the dataset: who it is and its descriptors."""

    image: str
    subject: str
    descriptors: Descriptors


@dataclass(frozen=True)
class Identification:
    """The attack's answer for one probe."""

    rank: float  # NaN when the probe has no descriptor or its participant no other image
    distance: float  # to the closest target (NaN as above)
    n_candidates: int  # participants ranked (targets' one included)
    same_scan_distance: float  # upper bound: distance to the probe's own original

    @property
    def reidentified(self) -> bool | None:
        """Ranked first and closer than :data:`MATCH_DISTANCE`; None when not measurable."""
        if math.isnan(self.rank):
            return None
        return bool(self.rank == 1 and self.distance < MATCH_DISTANCE)

    def as_record(self, prefix: str) -> dict[str, float | int | bool | None]:
        return {f"{prefix}rank": self.rank, f"{prefix}distance": self.distance,
                f"{prefix}n_candidates": self.n_candidates,
                f"{prefix}same_scan_distance": self.same_scan_distance,
                f"{prefix}reidentified": self.reidentified}


def identify(probe: Descriptors, image: str, subject: str,
             gallery: Iterable[GalleryImage]) -> Identification:
    """Rank ``subject`` among the gallery's participants for a probe made from ``image``.

    >>> g = [GalleryImage("a1", "a", {"f": np.zeros(1)}), GalleryImage("a2", "a",
    ...      {"f": np.array([0.2])}), GalleryImage("b1", "b", {"f": np.array([0.1])})]
    >>> result = identify({"f": np.zeros(1)}, "a1", "a", g)
    >>> result.rank, round(result.distance, 2), result.same_scan_distance, result.reidentified
    (2.0, 0.2, 0.0, False)
    """
    closest: dict[str, float] = {}
    same_scan = float("nan")
    for entry in gallery:
        d = distance(probe, entry.descriptors)
        if entry.image == image:
            same_scan = d
            continue
        if not math.isnan(d):
            closest[entry.subject] = min(d, closest.get(entry.subject, math.inf))
    n = len(closest) + (0 if subject in closest else 1)
    target = closest.pop(subject, float("nan"))
    if math.isnan(target):
        return Identification(float("nan"), float("nan"), n, same_scan)
    rank = 1 + sum(1 for d in closest.values() if d < target)
    return Identification(float(rank), target, n, same_scan)


def chance(rank: int, n_candidates: float) -> float:
    """The rate at which a random guess ranks the right participant within ``rank``.

    >>> chance(1, 8), chance(5, 4)
    (0.125, 1.0)
    """
    if not n_candidates or math.isnan(n_candidates):
        return float("nan")
    return min(rank, n_candidates) / n_candidates


# --- the attack on a dataset ------------------------------------------------------------------

#: The two ways the attacker places the face on a defaced render.
MODES = {"own": "the probe's own detection", "box": "the box and landmarks of the original"}


@dataclass
class Seen:
    """One original seen by the detector: its views and its descriptors (in memory only)."""

    views: Any  # bidsapp.faces.detect.FaceViews
    descriptors: dict[str, np.ndarray]
    reference: Any  # bidsapp.metrics.reference.OriginalReference (skin on the world grid)


def see_original(image, brain_mask: np.ndarray) -> Seen:
    """Render an original from the face-framed view grid; a descriptor per view with a face."""
    from bidsapp.faces import detect
    from bidsapp.metrics.reference import face_framing

    reference, points, cameras = face_framing(image, brain_mask)
    views = detect.see(points, reference.grid.spacing, cameras)
    descriptors = {name: detect.embedding(views.renders[name], face.box)
                   for name, face in views.faces.items() if face is not None}
    return Seen(views, descriptors, reference)


def see_defaced(original: Seen, defaced) -> tuple[dict[str, dict[str, np.ndarray]], Any]:
    """Descriptors of a defaced output by mode (:data:`MODES`), and its views.

    The defaced image is rendered by the original's cameras. ``own``: where the detector finds
    a face on the defaced render; ``box``: wherever the original had one, aligned with the
    original's box and landmarks.
    """
    from bidsapp.faces import detect
    from bidsapp.metrics.reference import defaced_points

    views = detect.see(defaced_points(original.reference, defaced),
                       original.reference.grid.spacing, original.views.cameras)
    own = {name: detect.embedding(views.renders[name], face.box)
           for name, face in views.faces.items() if face is not None}
    box = {name: detect.embedding(views.renders[name], face.box, face.landmarks)
           for name, face in original.views.faces.items() if face is not None}
    return {"own": own, "box": box}, views


@dataclass
class Probe:
    """One probe of the attack: which image and defacer, its descriptors, its detections."""

    image: str
    subject: str
    suffix: str
    defacer: str  # ORIGINAL for the ceiling
    descriptors: dict[str, dict[str, np.ndarray]]  # mode -> view -> descriptor
    n_views: int = 0
    n_faces: int = 0
    best_score: float = float("nan")
    best_view: str | None = None
    best_box: tuple[int, int, int, int] | None = None


#: The ``defacer`` of the probes that are originals (the attack's ceiling).
ORIGINAL = "original"


def _detections(probe: Probe, views) -> Probe:
    faces = {name: face for name, face in views.faces.items() if face is not None}
    probe.n_views, probe.n_faces = len(views.faces), len(faces)
    if faces:
        best = max(faces.values(), key=lambda face: face.score)
        probe.best_score, probe.best_view, probe.best_box = best.score, best.view, best.box
    return probe


def gather(images, output_dir, results: Mapping[str, Iterable[str]], *, log=None
           ) -> tuple[list[GalleryImage], list[Probe], list[str]]:
    """Gallery and probes of a dataset, one original at a time (memory stays flat).

    ``images``: the dataset's :class:`~bidsapp.bids.AnatImage`; ``results``: image key ->
    the defacers whose output in ``output_dir`` to attack. Returns the gallery, the probes
    (originals first) and one line per image that could not be used.
    """
    import nibabel as nib

    from bidsapp.outputs import output_path

    gallery, probes, problems = [], [], []
    for image in images:
        brain_path = output_path(output_dir, image, desc="brain", suffix="mask", mod=True)
        if not brain_path.is_file():
            problems.append(f"{image.key}: no brain mask in output_dir; not attacked (rerun "
                            "the participant level)")
            continue
        try:
            original = nib.load(str(image.path))
            brain = np.asanyarray(nib.load(str(brain_path)).dataobj) > 0
            seen = see_original(original, brain)
        except Exception as exc:  # one unreadable image must not stop the attack
            problems.append(f"{image.key}: not attacked ({type(exc).__name__}: {exc})")
            continue
        gallery.append(GalleryImage(image.key, image.subject, seen.descriptors))
        probes.append(_detections(Probe(image.key, image.subject, image.suffix, ORIGINAL,
                                        {"own": seen.descriptors, "box": seen.descriptors}),
                                  seen.views))
        for defacer in results.get(image.key, ()):
            path = output_path(output_dir, image, desc=defacer)
            if not path.is_file():
                continue
            try:
                descriptors, views = see_defaced(seen, nib.load(str(path)))
            except Exception as exc:
                problems.append(f"{image.key} {defacer}: not attacked "
                                f"({type(exc).__name__}: {exc})")
                continue
            probes.append(_detections(Probe(image.key, image.subject, image.suffix, defacer,
                                            descriptors), views))
        if log is not None:
            log(f"identification attack: {image.key} seen ({len(seen.descriptors)} of "
                f"{len(seen.views.faces)} views with a face)")
    return gallery, probes, problems


def attack_table(gallery: list[GalleryImage], probes: list[Probe]):
    """One row per probe: detections, and rank, distance and re-identification per mode."""
    import pandas as pd

    rows = []
    for probe in probes:
        row: dict[str, Any] = {
            "image": probe.image, "subject": probe.subject, "suffix": probe.suffix,
            "defacer": probe.defacer, "identification.views": probe.n_views,
            "identification.views_with_face": probe.n_faces,
            "identification.best_score": probe.best_score,
            "identification.best_view": probe.best_view,
            "identification.best_box": None if probe.best_box is None
            else " ".join(str(v) for v in probe.best_box)}
        flags = []
        for mode in MODES:
            found = identify(probe.descriptors[mode], probe.image, probe.subject, gallery)
            row.update(found.as_record(f"identification.{mode}."))
            flags.append(found.reidentified)
        known = [f for f in flags if f is not None]
        row["identification.reidentified"] = any(known) if known else None
        rows.append(row)
    return pd.DataFrame(rows)


def rates(table) -> Any:
    """Rank-1 and rank-5 identification rates per suffix and defacer (originals first).

    ``table`` is :func:`attack_table`'s. For each mode: how many probes could be ranked (a
    descriptor, and another image of the participant in the gallery), how many ranked the
    right participant within rank 1 and 5, the rates, the chance rates (a random guess among
    the same candidates), and how many were re-identified (rank 1 and closer than
    :data:`MATCH_DISTANCE`).
    """
    import pandas as pd

    out = []
    if table is None or len(table) == 0:
        return pd.DataFrame(out)
    for (suffix, defacer), group in table.groupby(["suffix", "defacer"], sort=False):
        row: dict[str, Any] = {"suffix": suffix, "defacer": defacer, "n_probes": len(group)}
        for mode in MODES:
            rank = pd.to_numeric(group[f"identification.{mode}.rank"], errors="coerce")
            candidates = pd.to_numeric(group[f"identification.{mode}.n_candidates"],
                                       errors="coerce")[rank.notna()]
            ranked = int(rank.notna().sum())
            row[f"{mode}_n_ranked"] = ranked
            for k in RANKS:
                hits = int((rank <= k).sum())
                row[f"{mode}_rank{k}"] = hits
                row[f"{mode}_rank{k}_rate"] = hits / ranked if ranked else float("nan")
                row[f"{mode}_rank{k}_chance"] = float(np.mean([chance(k, n) for n in candidates])
                                                      ) if ranked else float("nan")
            flags = group[f"identification.{mode}.reidentified"]
            row[f"{mode}_reidentified"] = int((flags == True).sum())  # noqa: E712 (None stays)
        out.append(row)
    frame = pd.DataFrame(out)
    order = {name: i for i, name in enumerate([ORIGINAL] + [d for d in frame["defacer"]
                                                             if d != ORIGINAL])}
    return frame.sort_values(["suffix", "defacer"], key=lambda s: s.map(order) if s.name ==
                             "defacer" else s, kind="stable").reset_index(drop=True)


def attack_dataset(bids_dir, output_dir, keys: Iterable[str], results: Iterable[tuple[str, str]],
                   *, log=None) -> tuple[Any, list[str]]:
    """The attack on the originals ``keys`` of ``bids_dir`` and their results in ``output_dir``.

    ``keys``: the image keys with an input record (the gallery); ``results``: (image key,
    defacer) pairs of successful defacer runs (the probes). Returns :func:`attack_table`'s
    table (None when the attack could not run) and problem lines.
    """
    from pathlib import Path

    from bidsapp.bids import find_anatomical_images, load_layout
    from bidsapp.faces.dlib_models import MissingModels, detector

    wanted: dict[str, list[str]] = {key: [] for key in keys}
    for key, defacer in results:
        wanted.setdefault(key, []).append(defacer)
    try:
        detector()
    except MissingModels as exc:
        return None, [f"identification attack not run: {exc}"]
    if not Path(bids_dir).is_dir():
        return None, [f"identification attack not run: bids_dir {bids_dir} is not a folder "
                      "(the originals are the attack's gallery)"]
    try:
        images = [i for i in find_anatomical_images(load_layout(Path(bids_dir)))
                  if i.key in wanted and i.path.name.split(".nii")[0] == i.key]
    except Exception as exc:  # pybids refusing the dataset must not stop the group level
        return None, [f"identification attack not run: cannot index {bids_dir} ({exc})"]
    if not images:
        return None, []
    gallery, probes, problems = gather(images, Path(output_dir), wanted, log=log)
    return attack_table(gallery, probes), problems
