"""Face regions placed from the face itself: dlib's 5 landmarks on the original's render,
mapped back onto the skin, define the eyes, nose, mouth, chin and face on the frontal depth map.

Units come from the face: ``D`` is the distance between the two eye centres and ``u`` the
height of the nose base below the eye line, both measured in the coronal (x, z) plane on this
face, so a child's smaller, lower face gets smaller, lower regions. Each region is a box (or
disc) in the face's own frame (horizontal = from one eye to the other):

* eyes: two discs of radius 0.3 D around the eye centres;
* nose: |a| <= 0.25 D around the nose base's column, from 0.05 u below the nose base up to
  0.15 D below the eye line;
* mouth: |a| <= 0.55 D, from 0.05 u to 0.8 u below the nose base;
* chin: |a| <= 0.55 D, from 0.8 u to 1.55 u below the nose base;
* face: |a| <= 1.0 D around the eyes' midpoint, from 1.55 u below the nose base to 0.55 D
  above the eye line, and skin no deeper than 0.8 D behind the nose tip.

The vertical proportions follow adult facial anthropometry (Farkas 1994: eye line to
subnasale about 45 mm, subnasale to stomion 22 mm, stomion to gnathion 45 mm). Only skin of the
original counts (NaN elsewhere).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from bidsapp.metrics.face import FaceGeometry, NOSE_TIP_RADIUS_MM, SkinMaps, WorldGrid

EYE_RADIUS_D = 0.30
NOSE_HALF_D, NOSE_LOW_U, NOSE_TOP_D = 0.25, 0.05, 0.15
MOUTH_HALF_D, MOUTH_TOP_U, MOUTH_LOW_U = 0.55, 0.05, 0.80
CHIN_HALF_D, CHIN_LOW_U = 0.55, 1.55
FACE_HALF_D, FACE_TOP_D, FACE_DEPTH_D = 1.0, 0.55, 0.8
#: Plausible eye distance (mm) on the coronal plane; outside it the landmarks are not trusted.
EYE_DISTANCE_MM = (25.0, 100.0)


def _frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Eyes' midpoint (x, z), horizontal and vertical unit vectors, D and u (mm)."""
    eyes = np.stack([points[0:2].mean(0), points[2:4].mean(0)])[:, [0, 2]]
    base = points[4, [0, 2]]
    mid = eyes.mean(0)
    h = eyes[1] - eyes[0]
    distance = float(np.linalg.norm(h))
    h = h / distance
    v = np.array([-h[1], h[0]])
    if v[1] < 0:
        v = -v
    return mid, h, v, distance, float((mid - base) @ v)


def landmark_geometry(points_mm: np.ndarray, maps: SkinMaps, grid: WorldGrid,
                      base: FaceGeometry) -> FaceGeometry | None:
    """Face regions from the 5 landmarks (mm, RAS, in dlib's order) on the skin maps.

    ``base`` is the brain-proportion geometry: its ears and brain measures are kept. None when
    the landmarks are not on the skin or not face-like (eye distance, nose below the eyes).
    """
    points = np.asarray(points_mm, dtype=float)
    if points.shape != (5, 3) or not np.isfinite(points).all():
        return None
    mid, h, v, distance, drop = _frame(points)
    if not EYE_DISTANCE_MM[0] <= distance <= EYE_DISTANCE_MM[1] or drop < 0.3 * distance:
        return None
    xs, zs = grid.coords(0), grid.coords(2)
    rel = np.stack(np.meshgrid(xs, zs, indexing="ij"), -1) - mid
    a, b = rel @ h, rel @ v  # mm along the eye line and up the face
    base_a = float((points[4, [0, 2]] - mid) @ h)
    nose_b = -drop
    front = maps.anterior
    skin = np.isfinite(front)

    def band(half, low, high, centre=0.0):
        return (np.abs(a - centre) <= half * distance) & (b >= low) & (b <= high)

    nose_box = band(NOSE_HALF_D, nose_b - NOSE_LOW_U * drop, -NOSE_TOP_D * distance, base_a)
    if not (nose_box & skin).any():
        return None
    ix, iz = np.unravel_index(np.argmax(np.where(nose_box & skin, front, -np.inf)), front.shape)
    tip = (float(xs[ix]), float(front[ix, iz]), float(zs[iz]))
    bottom = nose_b - CHIN_LOW_U * drop
    deep = skin & (front >= tip[1] - FACE_DEPTH_D * distance)
    face = deep & band(FACE_HALF_D, bottom, FACE_TOP_D * distance)
    eye_centres = [(points[0:2].mean(0)[[0, 2]] - mid), (points[2:4].mean(0)[[0, 2]] - mid)]
    eyes = np.zeros_like(face)
    for centre in eye_centres:
        eyes |= (a - centre @ h) ** 2 + (b - centre @ v) ** 2 <= (EYE_RADIUS_D * distance) ** 2
    chin_box = band(CHIN_HALF_D, bottom, nose_b - MOUTH_LOW_U * drop, base_a)
    mouth_box = band(MOUTH_HALF_D, nose_b - MOUTH_LOW_U * drop, nose_b - MOUTH_TOP_U * drop,
                     base_a)
    regions = {
        "face": face,
        "eyes": eyes & face,
        "nose": nose_box & face,
        "mouth": mouth_box & face,
        "chin": chin_box & face,
    }
    spacing = grid.spacing
    ii, kk = np.meshgrid(np.arange(len(xs)), np.arange(len(zs)), indexing="ij")
    disc = face & ((ii - ix) ** 2 + (kk - iz) ** 2 <= (NOSE_TIP_RADIUS_MM / spacing) ** 2)
    disc[ix, iz] = True
    return replace(base, front=regions, nose_tip=tip, nose_index=(int(ix), int(iz)),
                   nose_disc=disc, regions_from="landmarks", lower_box=mouth_box)
