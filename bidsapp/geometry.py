"""Small voxel-grid helpers every layer shares: bounding boxes and block averages.

Numpy only, so any module may use them. An empty mask has no bounding box (None): each caller
says what that means for it.
"""

from __future__ import annotations

import numpy as np


def bounding_box(mask: np.ndarray, margin=0) -> tuple[slice, ...] | None:
    """The smallest box holding every non-zero voxel of ``mask``, grown by ``margin`` voxels
    (one number, or one per axis) and clipped to the array; None when ``mask`` is empty.

    >>> bounding_box(np.array([[0, 0, 0], [0, 1, 0]]), margin=1)
    (slice(0, 2, None), slice(0, 3, None))
    >>> bounding_box(np.zeros((2, 2))) is None
    True
    """
    mask = np.asarray(mask, dtype=bool)
    margins = np.broadcast_to(np.asarray(margin, dtype=int), (mask.ndim,))
    box = []
    for axis, pad in enumerate(margins):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        where = np.flatnonzero(mask.any(axis=others))
        if where.size == 0:
            return None
        box.append(slice(max(0, int(where[0]) - int(pad)),
                         min(mask.shape[axis], int(where[-1]) + 1 + int(pad))))
    return tuple(box)


def box_intersection(box: tuple[slice, ...], other: tuple[slice, ...]) -> tuple[slice, ...]:
    """The part of ``box`` inside ``other`` (both from :func:`bounding_box`; may be empty).

    >>> box_intersection((slice(0, 5), slice(2, 4)), (slice(3, 9), slice(5, 6)))
    (slice(3, 5, None), slice(5, 5, None))
    """
    return tuple(slice(max(a.start, b.start), max(a.start, b.start, min(a.stop, b.stop)))
                 for a, b in zip(box, other))


def block_factors(zooms, spacing_mm: float) -> list[int]:
    """Voxels per block along each of the first three axes, for blocks of about ``spacing_mm``
    (at least one: axes already coarser keep their spacing)."""
    return [max(1, round(spacing_mm / float(z))) for z in zooms[:3]]


def block_mean(data: np.ndarray, factors) -> np.ndarray:
    """The mean of each block of ``factors`` voxels (float32, accumulated in float64).

    Voxels past the last whole block are dropped; an axis shorter than one block is padded
    with its edge values to make one.
    """
    shape = [max(1, s // f) for s, f in zip(data.shape, factors)]
    pads = [(0, max(0, n * f - s)) for n, f, s in zip(shape, factors, data.shape)]
    if any(after for _, after in pads):
        data = np.pad(data, pads, mode="edge")
    cropped = data[: shape[0] * factors[0], : shape[1] * factors[1], : shape[2] * factors[2]]
    blocks = cropped.reshape(shape[0], factors[0], shape[1], factors[1], shape[2], factors[2])
    return blocks.mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)
