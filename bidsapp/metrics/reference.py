"""What depends on the original image only, computed once per image and shared by every
defacer's record: :class:`OriginalReference` holds the brain mask (deepbet) and its safety
margin, head and outer skin on the world grid, face regions, skin renders with their face
detection, and (on first use) the tissue segmentation. :func:`defaced_skin` puts a defaced
image's skin on that grid; :func:`face_framing`, :func:`defaced_points` and
:func:`defaced_render` give the reports and the identification attack the same views.
Definitions: ``docs/metrics_defacing.md``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np

from bidsapp.faces import detect as _detect
from bidsapp.faces import render as _faces_render
from bidsapp.faces import views as _views
from bidsapp.metrics import brain as _brain
from bidsapp.metrics import downstream as _downstream
from bidsapp.metrics import face as _face
from bidsapp.metrics import face_regions as _regions

#: A defaced output is seen from at most this many of the original's views.
PROBE_VIEWS = 5


@contextmanager
def timed(timings: dict[str, float] | None, key: str):
    """Add the seconds the block takes to ``timings[key]`` (when ``timings`` is given)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - start


def first_volume(image: nib.Nifti1Image) -> np.ndarray:
    """The image's voxels (the first volume of a 4D image)."""
    data = np.asanyarray(image.dataobj)
    if data.ndim > 3:
        data = data.reshape(data.shape[:3] + (-1,))[..., 0]
    return data


def finite_float32(data: np.ndarray) -> np.ndarray:
    """``data`` as float32 with NaN and infinities set to 0."""
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
    with timed(timings, "face"):
        head = _face.head_mask(volume_world, threshold)
        maps = _face.skin_maps(head, fov, grid)
    points = None
    if render:
        with timed(timings, "detection"):
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
            with timed(timings, "brain_mask"):
                brain_mask = deepbet_brain_mask(image, threads=threads)
        brain_mask = np.asarray(brain_mask, dtype=bool)
        data = first_volume(image)
        with timed(timings, "face"):
            grid = _face.world_grid(image)
            fov = _face.fov_mask(grid, image)
            values = finite_float32(data)
            volume_world = _face.to_world(grid, image, values)
            brain_world = _face.to_world(grid, image, brain_mask) > 0.5
            threshold = _face.head_threshold(values, brain_mask)
            median = float(np.median(values[brain_mask])) if brain_mask.any() else float("nan")
        skin = _skin(volume_world, threshold, fov, grid, timings, render)
        with timed(timings, "face"):
            geometry = _face.locate_face(skin.maps, brain_world, grid)
        if skin.points is not None:
            with timed(timings, "detection"):
                guess = geometry.nose_tip if geometry is not None else None
                skin.faces = _detect.see_original(skin.points, grid.spacing, guess)
            geometry = _landmark_geometry(skin, grid, geometry)
        with timed(timings, "face"):
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
            with timed(self.timings, "brain"):
                self._margin = _brain.margin_mask(self.brain_mask, self.zooms, self.margin_mm)
        return self._margin

    @property
    def tissues(self) -> Any:
        """The original's 3-class segmentation (computed once, on first use)."""
        if self._tissues is None:
            with timed(self.timings, "segmentation"):
                self._tissues = _downstream.default_segmenter(
                    self.image, self.brain_mask, threads=self.threads, seed=self.seed)
        return self._tissues

    @property
    def volumes(self) -> dict[str, float]:
        """TIV, GM, WM, CSF and brain volumes (ml) of the original."""
        return _downstream.volumes_ml(self.brain_mask, self.tissues, self.zooms)



def defaced_skin(reference: OriginalReference, defaced: nib.Nifti1Image, *,
                 render: bool = True, timings: dict[str, float] | None = None
                 ) -> tuple[Skin, np.ndarray, np.ndarray]:
    """The defaced image's skin on the original's world grid, seen by the original's cameras.

    Its head threshold is the original's, scaled by the ratio of the brain medians (a defacer
    may rescale intensities). Returns the skin, the image's values and its world-grid volume.
    """
    values = finite_float32(first_volume(defaced))
    with timed(timings, "face"):
        threshold = reference.threshold
        if reference.brain_mask.any():
            median = float(np.median(values[reference.brain_mask]))
            if np.isfinite(median) and median > 0 and reference.brain_median > 0:
                threshold *= median / reference.brain_median
        volume_world = _face.to_world(reference.grid, defaced, values)
    skin = _skin(volume_world, threshold, reference.fov, reference.grid, timings,
                 render and bool(reference.cameras))
    if skin.points is not None:
        with timed(timings, "detection"):
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
