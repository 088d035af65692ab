"""Did defacing work? One record per (image, defacer), with the same keys for every defacer.

:class:`OriginalReference` computes what depends on the original only, once per image: brain
mask (deepbet) and its safety margin, head and outer skin on the world grid, face regions, skin
renders with their face detection, and (on first use) the tissue segmentation.
:func:`defacing_metrics` compares one defaced image with it; :func:`input_face_check` says
whether the original had a face to begin with. Definitions: ``docs/metrics_defacing.md``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np

from bidsapp.metrics import brain as _brain
from bidsapp.metrics import downstream as _downstream
from bidsapp.metrics import face as _face
from bidsapp.faces import detect as _detect
from bidsapp.faces import render as _faces_render
from bidsapp.faces import views as _views
from bidsapp.metrics import face_regions as _regions

#: A defaced output is seen from at most this many of the original's views.
PROBE_VIEWS = 5
#: A face with at least this percentage painted with the image maximum is a refacer's shell.
PAINTED_PCT = 10.0


@contextmanager
def _timed(timings: dict[str, float] | None, key: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - start


def _volume(image: nib.Nifti1Image) -> np.ndarray:
    data = np.asanyarray(image.dataobj)
    if data.ndim > 3:
        data = data.reshape(data.shape[:3] + (-1,))[..., 0]
    return data


def _float(data: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(data, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)


@dataclass
class Skin:
    """Head mask on the world grid, its skin depth maps, skin points and the face views
    (renders with dlib's detection on each; None when not rendered)."""

    head: np.ndarray
    maps: _face.SkinMaps
    points: np.ndarray | None = None
    faces: _detect.FaceViews | None = None


def _skin(volume_world: np.ndarray, threshold: float, fov: np.ndarray, grid: _face.WorldGrid,
          timings: dict[str, float] | None, render: bool = True) -> Skin:
    with _timed(timings, "face"):
        head = _face.head_mask(volume_world, threshold)
        maps = _face.skin_maps(head, fov, grid)
    points = None
    if render:
        with _timed(timings, "detection"):
            points = _faces_render.skin_points(head, grid.affine)
    return Skin(head, maps, points)


def probe_cameras(faces: _detect.FaceViews | None) -> dict[str, _views.Camera]:
    """The cameras a defaced output is seen from: the original's views where its face was
    found, best first, at most :data:`PROBE_VIEWS` (the first ones of the grid without any)."""
    if faces is None:
        return {}
    found = sorted((f for f in faces.faces.values() if f is not None), key=lambda f: -f.score)
    names = [f.view for f in found][:PROBE_VIEWS] or list(faces.cameras)[:PROBE_VIEWS]
    return {name: faces.cameras[name] for name in names}


@dataclass
class OriginalReference:
    """Everything about one original image that every defacer's record is compared with.

    Build it with :meth:`build`. ``tissues`` (and ``volumes``) are computed on first use by
    :func:`bidsapp.anatomy.segmentation.segment_tissues`, or given.
    """

    image: nib.Nifti1Image
    data: np.ndarray
    brain_mask: np.ndarray
    grid: _face.WorldGrid
    fov: np.ndarray
    brain_world: np.ndarray
    threshold: float
    brain_median: float
    skin: Skin
    geometry: _face.FaceGeometry | None
    cameras: dict[str, _views.Camera]
    painted_pct: float
    lower_face_in_fov: bool
    margin_mm: float = _brain.MARGIN_MM
    template: dict[str, np.ndarray] | None = None  # tissue maps naming the classes (non-T1w)
    threads: int = 1
    seed: int = 42
    timings: dict[str, float] = field(default_factory=dict)
    _tissues: Any = None
    _margin: np.ndarray | None = None

    @classmethod
    def build(cls, image: nib.Nifti1Image, brain_mask: np.ndarray | None = None, *,
              threads: int = 1, seed: int = 42, render: bool = True, tissues: Any = None,
              margin_mm: float = _brain.MARGIN_MM) -> OriginalReference:
        """Compute the original's brain mask (unless given), skin, face regions and renders."""
        from bidsapp.anatomy.brainmask import deepbet_brain_mask

        timings: dict[str, float] = {}
        if brain_mask is None:
            with _timed(timings, "brain_mask"):
                brain_mask = deepbet_brain_mask(image, threads=threads)
        brain_mask = np.asarray(brain_mask, dtype=bool)
        data = _volume(image)
        with _timed(timings, "face"):
            grid = _face.world_grid(image)
            fov = _face.fov_mask(grid, image)
            values = _float(data)
            volume_world = _face.to_world(grid, image, values)
            brain_world = _face.to_world(grid, image, brain_mask) > 0.5
            threshold = _face.head_threshold(values, brain_mask)
            median = float(np.median(values[brain_mask])) if brain_mask.any() else float("nan")
        skin = _skin(volume_world, threshold, fov, grid, timings, render)
        with _timed(timings, "face"):
            geometry = _face.locate_face(skin.maps, brain_world, grid)
        if skin.points is not None:
            with _timed(timings, "detection"):
                guess = geometry.nose_tip if geometry is not None else None
                skin.faces = _detect.see_original(skin.points, grid.spacing, guess)
            geometry = _landmark_geometry(skin, grid, geometry)
        with _timed(timings, "face"):
            painted = _face.painted_face_pct(volume_world, skin.maps, geometry, grid,
                                             float(values.max()))
            in_fov = _face.lower_face_in_fov(fov, geometry, grid)
        cameras = probe_cameras(skin.faces)
        return cls(image=image, data=data, brain_mask=brain_mask, grid=grid,
                   fov=fov, brain_world=brain_world, threshold=threshold, brain_median=median,
                   skin=skin, geometry=geometry, cameras=cameras, painted_pct=painted,
                   lower_face_in_fov=in_fov, margin_mm=margin_mm, threads=threads, seed=seed,
                   timings=timings, _tissues=tissues)

    @property
    def zooms(self) -> tuple[float, float, float]:
        return tuple(float(z) for z in self.image.header.get_zooms()[:3])

    @property
    def margin_mask(self) -> np.ndarray:
        """The brain mask dilated by ``margin_mm`` (computed once, on first use)."""
        if self._margin is None:
            with _timed(self.timings, "brain"):
                self._margin = _brain.margin_mask(self.brain_mask, self.zooms, self.margin_mm)
        return self._margin

    @property
    def tissues(self) -> Any:
        """The original's 3-class segmentation (computed once, on first use)."""
        if self._tissues is None:
            with _timed(self.timings, "segmentation"):
                self._tissues = _downstream.default_segmenter(
                    self.image, self.brain_mask, threads=self.threads, seed=self.seed)
        return self._tissues

    @property
    def volumes(self) -> dict[str, float]:
        """TIV, GM, WM, CSF and brain volumes (ml) of the original."""
        return _downstream.volumes_ml(self.brain_mask, self.tissues, self.zooms)


def _painted(pct: float) -> bool:
    return bool(np.isfinite(pct) and pct >= PAINTED_PCT)


def defaced_skin(reference: OriginalReference, defaced: nib.Nifti1Image, *,
                 render: bool = True, timings: dict[str, float] | None = None
                 ) -> tuple[Skin, np.ndarray, np.ndarray]:
    """The defaced image's skin on the original's world grid, seen by the original's cameras.

    Its head threshold is the original's, scaled by the ratio of the brain medians (a defacer
    may rescale intensities). Returns the skin, the image's values and its world-grid volume.
    """
    values = _float(_volume(defaced))
    with _timed(timings, "face"):
        threshold = reference.threshold
        if reference.brain_mask.any():
            median = float(np.median(values[reference.brain_mask]))
            if np.isfinite(median) and median > 0 and reference.brain_median > 0:
                threshold *= median / reference.brain_median
        volume_world = _face.to_world(reference.grid, defaced, values)
    skin = _skin(volume_world, threshold, reference.fov, reference.grid, timings,
                 render and bool(reference.cameras))
    if skin.points is not None:
        with _timed(timings, "detection"):
            skin.faces = _detect.see(skin.points, reference.grid.spacing, reference.cameras)
    return skin, values, volume_world


def _landmark_geometry(skin: Skin, grid: _face.WorldGrid,
                       geometry: _face.FaceGeometry | None) -> _face.FaceGeometry | None:
    """The face regions from the original's best detection, when it gives any."""
    best = skin.faces.best if skin.faces is not None else None
    if best is None or geometry is None:
        return geometry
    points = skin.faces.renders[best.view].world(best.landmarks[:, 0], best.landmarks[:, 1])
    return _regions.landmark_geometry(points, skin.maps, grid, geometry) or geometry


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


def defacing_metrics(reference: OriginalReference, defaced: nib.Nifti1Image,
                     altered_mask: np.ndarray | None = None, *, downstream: bool = True,
                     render: bool = True, timings: dict[str, float] | None = None,
                     computed: dict[str, Any] | None = None) -> dict[str, Any]:
    """All metrics of one defaced image against its original; same keys for every defacer.

    ``altered_mask`` (voxels the defacer changed, as the runner writes it) is recomputed from
    the values when not given. ``downstream=False`` or ``render=False`` leave those keys NaN
    (None for booleans). ``timings`` receives the seconds spent per metric group;
    ``computed`` the defaced image's brain mask and tissues, when the downstream step made them.
    """
    data = _volume(defaced)
    if data.shape != reference.data.shape:
        raise ValueError(f"defaced shape {data.shape} differs from the original's "
                         f"{reference.data.shape}")
    record: dict[str, Any] = {}
    with _timed(timings, "brain"):
        changed = (np.asarray(altered_mask, dtype=bool) if altered_mask is not None
                   else _brain.changed_voxels(reference.data, data))
        record.update(_brain.brain_preservation(changed, reference.brain_mask, reference.zooms,
                                                margin=reference.margin_mask))
    skin, values, volume_world = defaced_skin(reference, defaced, render=render,
                                              timings=timings)
    with _timed(timings, "face"):
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
        with _timed(timings, "downstream"):
            record.update(_downstream.downstream_metrics(
                reference.brain_mask, reference.volumes, defaced, threads=reference.threads,
                seed=reference.seed, computed=computed, template=reference.template))
    else:
        record.update(_downstream.empty())
    return record


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


__all__ = ["OriginalReference", "defaced_skin", "defacing_metrics", "input_face_check"]


def face_framing(image: nib.Nifti1Image, brain_mask: np.ndarray
                 ) -> tuple[OriginalReference, np.ndarray, dict[str, _views.Camera]]:
    """The original's reference (without renders), its skin points and its face-framed view
    grid: the cameras the participant level saw its defaced outputs from
    (:func:`bidsapp.faces.detect.face_cameras` from the same skin and nose-tip guess as
    :meth:`OriginalReference.build`)."""
    reference = OriginalReference.build(image, brain_mask, render=False)
    points = _faces_render.skin_points(reference.skin.head, reference.grid.affine)
    guess = reference.geometry.nose_tip if reference.geometry is not None else None
    cameras, _ = _detect.face_cameras(points, reference.grid.spacing, guess)
    return reference, points, cameras


def defaced_points(reference: OriginalReference, defaced: nib.Nifti1Image) -> np.ndarray:
    """The skin points of a defaced output on its original's world grid (what gets rendered)."""
    skin, _, _ = defaced_skin(reference, defaced, render=False)
    return _faces_render.skin_points(skin.head, reference.grid.affine)


def defaced_render(reference: OriginalReference, defaced: nib.Nifti1Image,
                   camera: _views.Camera) -> _faces_render.Render:
    """The render of a defaced output's skin from ``camera``, as the face detector saw it."""
    return _faces_render.render(defaced_points(reference, defaced), camera,
                                reference.grid.spacing)
