"""The cameras every face render uses: one grid of yaw and pitch around the front of the head.

Yaw turns the camera around the superior axis towards the subject's right; pitch raises it
above the face. The same grid (and the same framing, taken from the original) is used for
the original and for every defaced output, so renders of one image compare pixel for pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Yaw and pitch (degrees) of the views; the frontal view comes first.
YAWS = (0.0, -25.0, 25.0)
PITCHES = (0.0, -15.0, 15.0)
#: Rendered image size (pixels, square) handed to the detector.
SIZE = 176
#: The camera's field of view is the head's width times this.
MARGIN = 1.08


def view_name(yaw: float, pitch: float) -> str:
    """Stable name of a view, e.g. ``y+25p-15``.

    >>> view_name(0.0, 0.0), view_name(-25, 15)
    ('y+0p+0', 'y-25p+15')
    """
    return f"y{yaw:+.0f}p{pitch:+.0f}"


@dataclass(frozen=True)
class Camera:
    """Orthographic camera looking at ``centre`` (mm, RAS) from ``yaw``/``pitch`` (degrees).

    The image is ``size`` pixels square and ``2 * half_width`` mm wide.
    """

    yaw: float
    pitch: float
    centre: tuple[float, float, float]
    half_width: float
    size: int = SIZE

    @property
    def name(self) -> str:
        return view_name(self.yaw, self.pitch)

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit vectors (towards the camera, image right, image up) in RAS."""
        a, p = np.deg2rad(self.yaw), np.deg2rad(self.pitch)
        toward = np.array([np.cos(p) * np.sin(a), np.cos(p) * np.cos(a), np.sin(p)])
        up = np.array([-np.sin(p) * np.sin(a), -np.sin(p) * np.cos(a), np.cos(p)])
        right = np.cross(-toward, up)
        return toward, right, up

    @property
    def pixel_mm(self) -> float:
        return 2.0 * self.half_width / self.size

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(column, row, depth) of points (n, 3) in mm: pixel coordinates and mm towards
        the camera from the centre."""
        toward, right, up = self.axes()
        rel = np.asarray(points, dtype=float) - np.asarray(self.centre)
        col = (rel @ right + self.half_width) / self.pixel_mm - 0.5
        row = (self.half_width - rel @ up) / self.pixel_mm - 0.5
        return col, row, rel @ toward

    def unproject(self, col, row, depth) -> np.ndarray:
        """World points (..., 3) in mm of pixel coordinates at ``depth`` mm towards the camera."""
        toward, right, up = self.axes()
        col, row, depth = (np.asarray(v, dtype=float)[..., None] for v in (col, row, depth))
        u = (col + 0.5) * self.pixel_mm - self.half_width
        w = self.half_width - (row + 0.5) * self.pixel_mm
        return np.asarray(self.centre) + u * right + w * up + depth * toward


def cameras(head_points: np.ndarray, centre=None, size: int = SIZE, yaws=YAWS,
            pitches=PITCHES) -> dict[str, Camera]:
    """The view grid framed on a head (its skin points, mm): looking at ``centre`` (the
    nose tip; default the middle of the head), as wide as the head is from left to right."""
    if len(head_points) == 0:
        return {}
    low, high = head_points.min(0), head_points.max(0)
    centre = (low + high) / 2 if centre is None else np.asarray(centre, dtype=float)
    half = MARGIN * (high[0] - low[0]) / 2
    out = {}
    for pitch in pitches:
        for yaw in yaws:
            cam = Camera(float(yaw), float(pitch), tuple(float(v) for v in centre),
                         float(half), size)
            out[cam.name] = cam
    return out
