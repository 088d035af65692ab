"""Fast shaded renders of the outer skin for the face detector, with their depth maps.

The skin is the boundary of the filled head mask of :mod:`bidsapp.metrics.face` (on its RAS
world grid). Its voxels are projected by an orthographic :class:`~bidsapp.faces.views.Camera`
into a z-buffer on a grid as fine as the world grid, which is smoothed, upsampled to the
camera's size and shaded (Lambert, light above the camera, plus an ambient term). Each
:class:`Render` keeps its depth map, so a pixel (a detector box corner, a landmark) maps back
to a point on the skin (:meth:`Render.world`). Pure numpy/scipy; deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bidsapp.faces.views import Camera

#: Light direction: elevation (degrees) above the line of sight; and the ambient term.
LIGHT_ELEVATION = 30.0
AMBIENT = 0.15
#: Gaussian smoothing (in z-buffer cells) of the depth map before shading.
SMOOTHING = 0.7


@dataclass(frozen=True)
class Render:
    """Grey image (uint8, ``size`` square), depth (mm towards the camera, NaN off the head)."""

    camera: Camera
    image: np.ndarray
    depth: np.ndarray

    def rgb(self) -> np.ndarray:
        """The image as (size, size, 3) uint8, as dlib wants it."""
        return np.repeat(self.image[..., None], 3, axis=2)

    def world(self, col, row) -> np.ndarray:
        """Skin points (..., 3) in mm under pixel coordinates (NaN off the head)."""
        col, row = np.asarray(col, dtype=float), np.asarray(row, dtype=float)
        depth = ndimage.map_coordinates(np.nan_to_num(self.depth, nan=-1e6),
                                        [np.ravel(row), np.ravel(col)], order=1, mode="nearest")
        depth = np.where(depth < -1e5, np.nan, depth).reshape(np.shape(col))
        return self.camera.unproject(col, row, depth)


def skin_points(head: np.ndarray, affine: np.ndarray, smoothing: float = 1.0) -> np.ndarray:
    """Points (mm) on the skin: the vertices and triangle centres of the marching-cubes
    surface (Lorensen & Cline 1987, scikit-image) of the Gaussian-smoothed head mask."""
    from skimage.measure import marching_cubes

    if not head.any():
        return np.zeros((0, 3))
    volume = ndimage.gaussian_filter(np.pad(head.astype(np.float32), 2), smoothing)
    verts, faces, _, _ = marching_cubes(volume, level=0.5, step_size=1, allow_degenerate=False)
    verts = np.concatenate([verts, verts[faces].mean(1)]) - 2
    return verts @ affine[:3, :3].T + affine[:3, 3]


def render(points: np.ndarray, camera: Camera, spacing: float) -> Render:
    """Shaded render of skin points (world mm, about one per ``spacing`` mm)."""
    size = camera.size
    depth = np.full((size, size), np.nan)
    if len(points) == 0:
        return Render(camera, np.zeros((size, size), np.uint8), depth)
    # z-buffer on cells one voxel wide, each point splatted on the 2 x 2 cells around it
    cells = max(8, int(np.ceil(2 * camera.half_width / spacing)))
    coarse = Camera(camera.yaw, camera.pitch, camera.centre, camera.half_width, cells)
    col, row, dist = coarse.project(points)
    c0, r0 = np.floor(col).astype(int), np.floor(row).astype(int)
    buffer = np.full(cells * cells, -np.inf)
    for dc in (0, 1):
        for dr in (0, 1):
            c, r = c0 + dc, r0 + dr
            keep = (c >= 0) & (c < cells) & (r >= 0) & (r < cells)
            np.maximum.at(buffer, r[keep] * cells + c[keep], dist[keep])
    buffer = buffer.reshape(cells, cells)
    hit = np.isfinite(buffer)
    floor = buffer[hit].min() - 5.0 if hit.any() else 0.0
    filled = np.where(hit, buffer, floor)
    weight = ndimage.gaussian_filter(hit.astype(float), SMOOTHING)
    smooth = ndimage.gaussian_filter(np.where(hit, filled, 0.0), SMOOTHING)
    smooth = np.where(weight > 1e-3, smooth / np.maximum(weight, 1e-3), floor)
    zoom = size / cells
    fine = ndimage.zoom(smooth, zoom, order=1, grid_mode=True, mode="nearest")
    mask = ndimage.zoom(hit.astype(float), zoom, order=1, grid_mode=True, mode="nearest") > 0.5
    fine, mask = fine[:size, :size], mask[:size, :size]
    # shading from the depth gradient (mm per mm): normal = (-dd/du, dd/dv, 1)
    step = camera.pixel_mm
    grad_r, grad_c = np.gradient(fine, step)
    normal = np.stack([-grad_c, grad_r, np.ones_like(fine)])
    normal /= np.linalg.norm(normal, axis=0)
    e = np.deg2rad(LIGHT_ELEVATION)
    light = np.array([0.0, np.sin(e), np.cos(e)])
    shade = AMBIENT + (1 - AMBIENT) * np.clip(np.tensordot(light, normal, axes=1), 0, 1)
    image = np.where(mask, np.round(255 * shade), 0).astype(np.uint8)
    depth = np.where(mask, fine, np.nan)
    return Render(camera, image, depth)
