"""Face detection, 5-point landmarks and embeddings on skin renders (dlib's models).

:func:`detect` runs the CNN detector on one :class:`~bidsapp.faces.render.Render` and returns
its best :class:`Face` (score = the detector's confidence, box and the 5 landmarks in pixels).
:func:`find_faces` renders a head from every camera of a view grid and detects on each.
:func:`embedding` is the 128-d ResNet descriptor of a face: an identifier, kept in memory only
(never written to outputs, work files or logs; record distances, ranks and scores instead).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bidsapp.faces import dlib_models
from bidsapp.faces.render import Render, render
from bidsapp.faces.views import Camera

#: A detection counts as a face from this CNN confidence up (dlib's own default is 0).
SCORE_THRESHOLD = 0.0
#: Landmark order of dlib's 5-point model.
LANDMARKS = ("eye_a_outer", "eye_a_inner", "eye_b_outer", "eye_b_inner", "nose_base")


@dataclass(frozen=True)
class Face:
    """One detection: view name, score, box (left, top, right, bottom) and the 5 landmarks
    (5, 2) as (column, row), all in pixels of that view's render."""

    view: str
    score: float
    box: tuple[int, int, int, int]
    landmarks: np.ndarray

    @property
    def centre(self) -> tuple[float, float]:
        left, top, right, bottom = self.box
        return (left + right) / 2, (top + bottom) / 2


def _rect(box):
    import dlib

    return dlib.rectangle(*(int(v) for v in box))


def landmarks(rendered: Render, box: tuple[int, int, int, int]) -> np.ndarray:
    """dlib's 5 landmarks (5, 2) as (column, row) pixels, predicted inside ``box``."""
    shape = dlib_models.landmarker()(rendered.rgb(), _rect(box))
    return np.array([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)],
                    dtype=float)


def detect(rendered: Render, threshold: float = SCORE_THRESHOLD) -> Face | None:
    """The best-scoring face on a render, with its landmarks; None below ``threshold``."""
    found = dlib_models.detector()(rendered.rgb(), 0)
    if len(found) == 0:
        return None
    best = max(found, key=lambda d: d.confidence)
    if best.confidence < threshold:
        return None
    r = best.rect
    box = (int(r.left()), int(r.top()), int(r.right()), int(r.bottom()))
    return Face(rendered.camera.name, float(best.confidence), box, landmarks(rendered, box))


def find_faces(points: np.ndarray, cameras: dict[str, Camera], spacing: float,
               threshold: float = SCORE_THRESHOLD
               ) -> tuple[dict[str, Render], dict[str, Face | None]]:
    """Render skin ``points`` from every camera and detect a face on each render."""
    renders = {name: render(points, cam, spacing) for name, cam in cameras.items()}
    return renders, {name: detect(r, threshold) for name, r in renders.items()}


def best_face(faces: dict[str, Face | None]) -> Face | None:
    """The highest-scoring detection over views (None when no view has one)."""
    found = [f for f in faces.values() if f is not None]
    return max(found, key=lambda f: f.score) if found else None


def embedding(rendered: Render, box: tuple[int, int, int, int],
              points: np.ndarray | None = None) -> np.ndarray:
    """The 128-d face descriptor of ``rendered`` for the face in ``box``.

    ``points``: the 5 landmarks (pixels) to align with, e.g. the original's when attacking a
    defaced render with the original's face position; default: predicted on this render.
    In memory only: never write it anywhere.
    """
    import dlib

    rect = _rect(box)
    if points is None:
        shape = dlib_models.landmarker()(rendered.rgb(), rect)
    else:
        shape = dlib.full_object_detection(rect, [dlib.point(int(round(c)), int(round(r)))
                                                  for c, r in points])
    return np.asarray(dlib_models.encoder().compute_face_descriptor(rendered.rgb(), shape),
                      dtype=float)


#: Framed on the face, the detector's box is this fraction of the image width.
BOX_FRACTION = 0.6


def face_cameras(points: np.ndarray, spacing: float, guess=None, *, yaws=None, pitches=None
                 ) -> tuple[dict[str, Camera], Face | None]:
    """The view grid framed on the original's face, and the best detection that framed it.

    First pass: cameras on ``guess`` (e.g. the nose tip from brain proportions) sized to the
    head. When a face is found, the grid is re-centred on the skin point under the box centre
    and zoomed so that the box spans :data:`BOX_FRACTION` of the image. Without a face the
    first grid is returned (and None).
    """
    from bidsapp.faces import views

    grid = {k: v for k, v in (("yaws", yaws), ("pitches", pitches)) if v is not None}
    first = views.cameras(points, centre=guess, **grid)
    renders, faces = find_faces(points, first, spacing)
    face = best_face(faces)
    if face is None:
        return first, None
    rendered = renders[face.view]
    centre = rendered.world(*face.centre)
    if not np.all(np.isfinite(centre)):
        return first, face
    box_mm = (face.box[2] - face.box[0]) * rendered.camera.pixel_mm
    half = box_mm / BOX_FRACTION / 2
    return {name: Camera(cam.yaw, cam.pitch, tuple(float(v) for v in centre), float(half),
                         cam.size) for name, cam in first.items()}, face


@dataclass(frozen=True)
class FaceViews:
    """One head seen from a camera grid: renders and the detection on each (None: no face)."""

    cameras: dict[str, Camera]
    renders: dict[str, Render]
    faces: dict[str, Face | None]

    @property
    def best(self) -> Face | None:
        return best_face(self.faces)


def see(points: np.ndarray, spacing: float, cameras: dict[str, Camera]) -> FaceViews:
    """Render and detect from given cameras (a defaced output seen as its original was)."""
    renders, faces = find_faces(points, cameras, spacing)
    return FaceViews(dict(cameras), renders, faces)


def see_original(points: np.ndarray, spacing: float, guess=None) -> FaceViews:
    """Frame the view grid on the original's face (:func:`face_cameras`), then render and
    detect from every camera of it."""
    cams, _ = face_cameras(points, spacing, guess)
    return see(points, spacing, cams)
