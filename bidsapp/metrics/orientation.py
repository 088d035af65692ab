"""Do the face and brain found agree with the axes an image is processed in?

For an image whose header gives no orientation (qform and sform codes 0), the axes are assumed
from the voxel sizes alone. In a head, the face and neck add tissue in front of and below the
brain, so the head's centre of mass lies anterior and inferior of the brain's. If the assumed
axes are wrong (the image was in fact stored in another order), one of the two points the
other way, and the face a defacer cut is not where it assumed.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def orientation_check(head: np.ndarray, brain: np.ndarray, spacing: float) -> dict[str, Any]:
    """Compare the head's and the brain's centres of mass on a RAS-aligned grid.

    ``head`` and ``brain`` are boolean masks on the same grid whose axes run left to right,
    posterior to anterior and inferior to superior, with ``spacing`` mm voxels.

    >>> head = np.zeros((10, 20, 20), bool); head[2:8, 2:18, 2:18] = True
    >>> brain = np.zeros_like(head); brain[3:7, 4:12, 10:17] = True
    >>> orientation_check(head, brain, 2.0)["agrees"]
    True
    >>> orientation_check(head[:, ::-1], brain[:, ::-1], 2.0)["agrees"]  # front and back swapped
    False
    """
    if not head.any() or not brain.any():
        return {"agrees": None, "head_minus_brain_mm": None,
                "check": "no head or no brain found: the assumed axes cannot be checked"}
    offset = (_centre(head) - _centre(brain)) * float(spacing)
    anterior, inferior = offset[1] > 0, offset[2] < 0
    agrees = bool(anterior and inferior)
    if agrees:
        text = "the face and neck lie in front of and below the brain: the assumed axes agree"
    else:
        wrong = [name for name, ok in (("anterior", anterior), ("superior", inferior)) if not ok]
        text = (f"the head's extra tissue is not where the assumed {' and '.join(wrong)} axis "
                "puts the face: the assumed orientation is probably wrong, check the result")
    return {"agrees": agrees, "head_minus_brain_mm": [round(float(v), 1) for v in offset],
            "check": text}


def _centre(mask: np.ndarray) -> np.ndarray:
    return np.array([float(np.mean(axis)) for axis in np.nonzero(mask)])
