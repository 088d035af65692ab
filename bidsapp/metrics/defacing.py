"""Did defacing work? One record per (image, defacer), with the same keys for every defacer.

:func:`measure_defaced` compares one defaced image with its original's
:class:`~bidsapp.metrics.reference.OriginalReference` and returns the record with the brain mask
and tissues it computed on the defaced image; :func:`defacing_metrics` is its record alone.
:func:`input_face_check` says whether the original had a face to begin with. Definitions:
``docs/metrics_defacing.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np

from bidsapp.faces import detect as _detect
from bidsapp.metrics import brain as _brain
from bidsapp.metrics import downstream as _downstream
from bidsapp.metrics import face as _face
from bidsapp.metrics.reference import OriginalReference, Skin, defaced_skin, first_volume, timed

#: A face with at least this percentage painted with the image maximum is a refacer's shell.
PAINTED_PCT = 10.0


def _painted(pct: float) -> bool:
    return bool(np.isfinite(pct) and pct >= PAINTED_PCT)


def _detection_keys(faces: _detect.FaceViews | None, painted_pct: float) -> dict[str, Any]:
    """dlib's answers per view, the best one, and the verdict: a face found and not painted."""
    out: dict[str, Any] = {}
    if faces is not None:
        for view, face in faces.faces.items():
            out[f"face_score_{view}"] = float("nan") if face is None else face.score
    best = faces.best if faces is not None else None
    out["face_score"] = float("nan") if best is None else best.score
    out["face_view"] = None if best is None else best.view
    out["face_box"] = None if best is None else list(best.box)
    out["face_views"] = 0 if faces is None else len(faces.faces)
    out["painted_face_pct"] = painted_pct
    out["face_detected"] = (None if not faces or not faces.faces
                            else best is not None and not _painted(painted_pct))
    return out


@dataclass(frozen=True)
class DefacedMeasures:
    """One defaced image's record, the brain mask and tissues the downstream step computed on
    it (None when that step did not run) and its skin as the face metrics saw it."""

    record: dict[str, Any]
    anatomy: _downstream.DefacedAnatomy | None = None
    skin: Skin | None = None


def measure_defaced(reference: OriginalReference, defaced: nib.Nifti1Image,
                    altered_mask: np.ndarray | None = None, *, downstream: bool = True,
                    render: bool = True, timings: dict[str, float] | None = None
                    ) -> DefacedMeasures:
    """All metrics of one defaced image against its original; same keys for every defacer.

    ``altered_mask`` (voxels the defacer changed, as the runner writes it) is recomputed from
    the values when not given. ``downstream=False`` or ``render=False`` leave those keys NaN
    (None for booleans). ``timings`` receives the seconds spent per metric group.
    """
    data = first_volume(defaced)
    if data.shape != reference.data.shape:
        raise ValueError(f"defaced shape {data.shape} differs from the original's "
                         f"{reference.data.shape}")
    record: dict[str, Any] = {}
    with timed(timings, "brain"):
        changed = (np.asarray(altered_mask, dtype=bool) if altered_mask is not None
                   else _brain.changed_voxels(reference.data, data))
        record.update(_brain.brain_preservation(changed, reference.brain_mask, reference.zooms,
                                                margin=reference.margin_mask))
    skin, values, volume_world = defaced_skin(reference, defaced, render=render,
                                              timings=timings)
    with timed(timings, "face"):
        record.update(_face.surface_change(reference.skin.maps, skin.maps, reference.geometry,
                                           reference.grid.spacing))
        record["surface_tolerance_mm"] = _face.TOLERANCE_MM
        record["face_regions_from"] = (None if reference.geometry is None
                                       else reference.geometry.regions_from)
        painted = _face.painted_face_pct(volume_world, skin.maps, reference.geometry,
                                         reference.grid, float(values.max()))
    record.update(_detection_keys(skin.faces, painted))
    if downstream and record["changed_voxels"] == 0:
        # bit-identical input: the deterministic steps would give the original's answers
        record.update(_downstream.compare(reference.brain_mask, reference.volumes,
                                          reference.brain_mask, reference.volumes))
    elif downstream:
        with timed(timings, "downstream"):
            keys, anatomy = _downstream.downstream_metrics(
                reference.brain_mask, reference.volumes, defaced, threads=reference.threads,
                seed=reference.seed, template=reference.template)
        record.update(keys)
        return DefacedMeasures(record, anatomy, skin)
    else:
        record.update(_downstream.empty())
    return DefacedMeasures(record, skin=skin)


def defacing_metrics(reference: OriginalReference, defaced: nib.Nifti1Image,
                     altered_mask: np.ndarray | None = None, **options) -> dict[str, Any]:
    """The record of :func:`measure_defaced` (same options), without the defaced anatomy."""
    return measure_defaced(reference, defaced, altered_mask, **options).record


def input_face_check(reference: OriginalReference) -> dict[str, Any]:
    """Is the input already defaced? Face detection on the original's own skin renders.

    Flagged (``input_already_defaced``) when the lower face is in the field of view and the
    calibrated detector finds no face, or when the face is a refacer's painted shell. Images
    whose field of view stops above the mouth cannot be judged and are not flagged.
    """
    keys = _detection_keys(reference.skin.faces, reference.painted_pct)
    record = {f"input_{k}": v for k, v in keys.items()}
    painted = _painted(reference.painted_pct)
    detected = bool(record["input_face_detected"])
    if reference.geometry is None:
        reason, flagged = "no brain or no skin found", True
    elif painted:
        reason, flagged = "the face is a painted shell (refaced)", True
    elif detected:
        reason, flagged = "face found", False
    elif not reference.lower_face_in_fov:
        reason, flagged = "field of view stops above the mouth: not judged", False
    elif reference.skin.faces is None:
        reason, flagged = "not rendered: not judged", False
    else:
        reason, flagged = "no face found", True
    record.update(input_face_in_fov=reference.lower_face_in_fov,
                  input_face_regions_from=(None if reference.geometry is None
                                           else reference.geometry.regions_from),
                  input_already_defaced=flagged, input_face_check=reason)
    return record
