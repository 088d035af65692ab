"""Participant-level outputs for the group, report and export tests, made the pipeline's way.

:func:`make_results` writes an ``output_dir`` through :mod:`bidsapp.outputs`' writers. The
metrics in each record are not typed in: they come from
:func:`bidsapp.metrics.defacing.defacing_metrics` run on a small synthetic head (a 4 mm ellipsoid with a nose, :func:`synthetic_head`) whose face
and brain are really cut as each scenario asks, and the IQMs from
:func:`bidsapp.metrics.iqms.defaced.record_iqms` on it (computed once per session). So renaming a
metric key changes these fixtures too; ``tests/test_end_to_end.py`` checks that their keys are
those of a real run.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (48, 56, 48)
ZOOM = 4.0


def synthetic_head(shape=SHAPE, zoom=ZOOM) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, brain mask, face-region mask) of an ellipsoid head with a nose, RAS voxels."""
    x, y, z = _coordinates(shape, zoom)
    head = (x / 70) ** 2 + (y / 88) ** 2 + (z / 92) ** 2 <= 1
    brain = (x / 55) ** 2 + ((y + 8) / 70) ** 2 + ((z - 22) / 55) ** 2 <= 1
    nose = (np.abs(x) <= 10) & (y > 80) & (y < 100) & (z > -30) & (z < 0) & \
        ((y - 80) < (0 - z) * 0.7)
    image = np.where(head | nose, 120.0, 0.0)
    image[brain] = 300.0
    image += np.random.default_rng(1).normal(0, 3, shape).clip(0)
    face = (y > 30) & (z < 10) & (z > -60)
    return image.astype(np.float32), brain, face & (head | nose) & ~brain


def _coordinates(shape=SHAPE, zoom=ZOOM) -> np.ndarray:
    return np.stack(np.meshgrid(*[(np.arange(n) - n / 2 + 0.5) * zoom for n in shape],
                                indexing="ij"))


def affine(zoom=ZOOM, shape=SHAPE) -> np.ndarray:
    out = np.diag([zoom, zoom, zoom, 1.0])
    out[:3, 3] = [-(n / 2 - 0.5) * zoom for n in shape]
    return out


@functools.lru_cache(maxsize=1)
def _reference():
    from bidsapp.metrics.reference import OriginalReference

    data, brain, _ = synthetic_head()
    return OriginalReference.build(nib.Nifti1Image(data, affine()), brain)


def _face_cut(level_mm: float) -> np.ndarray:
    """Everything in front of the brain's margin and below ``level_mm``: a defacer's cut."""
    reference = _reference()
    _, y, z = _coordinates()
    return (y > 25) & (z < level_mm) & (reference.data > 50) & ~reference.margin_mask


def _metrics(altered: np.ndarray, render: bool = True) -> tuple[dict, dict, np.ndarray]:
    from bidsapp.metrics.defacing import defacing_metrics

    reference = _reference()
    defaced = np.where(altered, 0, reference.data).astype(np.float32)
    timings: dict[str, float] = {}
    metrics = defacing_metrics(reference, nib.Nifti1Image(defaced, affine()), altered,
                               downstream=False, render=render, timings=timings)
    return metrics, timings, defaced


@functools.lru_cache(maxsize=1)
def _levels() -> tuple[tuple[float, float], ...]:
    """(face altered %, cut level in mm), measured on the synthetic head, increasing."""
    out = []
    for level in np.arange(-64.0, 25.0, 2 * ZOOM):
        metrics = _metrics(_face_cut(level), render=False)[0]
        out.append((metrics["face_altered_pct"], float(level)))
    return tuple(out)


def _brain_cut(voxels: int) -> np.ndarray:
    """The ``voxels`` most anterior-inferior brain voxels."""
    reference = _reference()
    _, y, z = _coordinates()
    index = np.flatnonzero(reference.brain_mask)
    order = np.argsort(-(y.ravel()[index] - z.ravel()[index]), kind="stable")
    cut = np.zeros(reference.brain_mask.size, bool)
    cut[index[order[:voxels]]] = True
    return cut.reshape(reference.brain_mask.shape)


@functools.lru_cache(maxsize=None)
def measured(brain_voxels: int = 0, removed: float = 0.92) -> tuple[str, np.ndarray, np.ndarray]:
    """(JSON of the measured entry, defaced image, altered mask) of one scenario.

    The face is cut at the level whose measured face alteration is closest to ``removed``
    (a fraction), and ``brain_voxels`` brain voxels are cut too.
    """
    pct, level = min(_levels(), key=lambda item: abs(item[0] - 100 * removed))
    altered = _face_cut(level) if removed > 0 else np.zeros(SHAPE, bool)
    altered = altered | _brain_cut(brain_voxels)
    metrics, timings, defaced = _metrics(altered)
    entry = {"metrics": metrics, "timings_s": timings, "iqms": _iqms()[1],
             "iqm_template": _iqms()[0]["iqm_template"]}
    return json.dumps(entry), defaced, altered


@functools.lru_cache(maxsize=1)
def _iqms() -> tuple[dict, dict]:
    """(the input's IQM keys, one defaced image's IQMs in both modes), computed once."""
    from bidsapp.anatomy.templates import iqm_template
    from bidsapp.metrics.iqms.defaced import record_iqms

    reference = _reference()
    defaced = np.where(_face_cut(0.0), 0, reference.data).astype(np.float32)
    out = record_iqms(reference.image, reference.brain_mask,
                        {"x": nib.Nifti1Image(defaced, affine())})
    original = {"iqms": out["original"], "iqm_masks": out["original_masks"],
                "iqm_settings": out["settings"], "iqm_template": iqm_template().record()}
    return original, out["defacers"]["x"]


def _input_measured() -> dict:
    from bidsapp.metrics.defacing import input_face_check

    original, _ = _iqms()
    return {**input_face_check(_reference()), **original}


def make_results(root: Path, subjects=("01", "02"), defacers=("quickshear", "facemask"), *,
                 suffixes=("T1w",), session: str | None = None, fail=(), values=None,
                 metrics: bool = True, failed_inputs=()) -> Path:
    """A participant-level output folder, written with bidsapp's writers.

    ``fail`` lists (subject, defacer) pairs whose defacer failed; ``values`` maps
    (subject, defacer) or (subject, defacer, suffix) to (brain voxels cut, fraction of the face
    cut); the default is (0, 0.92): a pass. ``failed_inputs`` lists subjects whose input check
    failed; ``metrics=False`` is a ``--skip-metrics`` run. Images (defaced, defacemask, brain
    mask) are the synthetic head's.
    """
    from bidsapp.bids import AnatImage
    from bidsapp.defacers.runner import ALTERED, DEFACED, LOG
    from bidsapp.outputs import (
        write_dataset_description,
        write_defacer_result,
        write_input_record,
    )

    root = Path(root)
    bids_dir = root.parent / f"{root.name}-bids"
    write_dataset_description(root)
    values = values or {}
    work = root.parent / f"{root.name}-work"
    for index, subject in enumerate(subjects):
        for suffix in suffixes:
            entities = (("sub", subject),) + ((("ses", session),) if session else ())
            folder = bids_dir / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
            image = AnatImage(folder / f"{'_'.join(f'{k}-{v}' for k, v in entities)}_{suffix}"
                                       ".nii.gz", entities, suffix)
            if subject in failed_inputs:
                write_input_record(root, bids_dir, image, {
                    "status": "failed", "error": f"{image.path.name}: every voxel is zero"})
                continue
            if not image.path.is_file():  # the input, as a BIDS dataset holds it
                image.path.parent.mkdir(parents=True, exist_ok=True)
                nib.save(nib.Nifti1Image(synthetic_head()[0], affine()), image.path)
            scratch = work / image.key
            scratch.mkdir(parents=True, exist_ok=True)
            brain_file = scratch / "brain.nii.gz"
            nib.save(nib.Nifti1Image(_reference().brain_mask.astype(np.uint8), affine()),
                     brain_file)
            write_input_record(root, bids_dir, image, {
                "status": "ok", "error": None, "shape": list(SHAPE), "zooms_mm": [ZOOM] * 3,
                "orientation": "RAS", "mode": "direct", "reference_t1w": None},
                brain_mask=brain_file, measured=_input_measured() if metrics else None)
            for rank, name in enumerate(defacers):
                result_dir = scratch / name
                result_dir.mkdir(exist_ok=True)
                (result_dir / LOG).write_text(f"{name} log\n")
                record = {"defacer": name, "version": "1.0", "title": name.title(),
                          "kind": "native", "mode": "direct",
                          "parameters": {"buffer_voxels": 10}, "guard": {"applied": False},
                          "wall_time_s": 2.0 + rank + 0.1 * index,
                          "peak_rss_mb": 100.0 * (rank + 1) + index, "cpu_time_s": 1.5 + rank}
                entry = None
                if (subject, name) in fail:
                    record.update(status="failed", error=f"{name} crashed on {image.key}")
                else:
                    brain_voxels, removed = values.get(
                        (subject, name, suffix), values.get((subject, name), (0, 0.92)))
                    entry, defaced, altered = measured(brain_voxels, removed)
                    record.update(status="ok", error=None, altered_voxels=int(altered.sum()),
                                  altered_ml=float(altered.sum() * ZOOM**3 / 1000))
                    nib.save(nib.Nifti1Image(defaced, affine()), result_dir / DEFACED)
                    nib.save(nib.Nifti1Image(altered.astype(np.uint8), affine()),
                             result_dir / ALTERED)
                write_defacer_result(root, bids_dir, image, name, result_dir, record,
                                     measured=json.loads(entry) if metrics and entry else None)
    return root
