"""Head size from the brain mask, for template registrations of heads from newborn to adult.

An adult-sized template (pydeface's mean head, deepbet brain 1462 ml) registered to an infant
(brain about 450 ml at birth, 900 ml at one year, adult-like after about two years; Knickmeyer et
al. 2008) starts far from its scale: an affine started at scale 1 settles on a mapping that
stretches the small face over the template's and misses it. The deepbet brain volume gives the
expected scale; the registration starts there for small brains and its result is checked
against it. A brain cut by the field of view gives no size (its volume is a part): such an image
is treated as adult-sized, as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: deepbet brain volume (ml) of pydeface's template (measured once with bidsapp's deepbet mask).
TEMPLATE_BRAIN_ML = 1462.0
#: Brains smaller than this (ml) start the registration at their expected scale (adults: 1400-1700
#: on the test data; children reach it at about two years).
SCALED_START_BELOW_ML = 1100.0
#: Smallest brain (ml) a template defacer accepts (a term newborn's is about 350-450 ml).
MIN_BRAIN_ML = 300.0
#: Registration sanity limits: brain centres after registration (mm), and the volume scale as a
#: multiple of the expected one.
MAX_CENTRE_ERROR_MM, SCALE_RANGE = 25.0, (0.4, 2.5)
#: A brain mask with more than this share of its voxels on the image's outer slices is cut.
CUT_BRAIN_SHARE = 0.002


@dataclass(frozen=True)
class HeadSize:
    """What the brain mask says about a head's size.

    ``complete``: the brain lies inside the field of view. ``expected_scale``: template volume
    per image volume (1 for a cut brain). ``initial_scale``: linear scale to start the
    registration from (1 unless the brain is complete and small).
    """

    brain_ml: float
    complete: bool
    expected_scale: float
    initial_scale: float

    def record(self) -> dict:
        """The figures for a defacer's record."""
        return {
            "brain_ml": round(self.brain_ml, 1),
            "brain_in_view": self.complete,
            "expected_volume_scale": round(self.expected_scale, 3),
        }


def brain_is_cut(brain: np.ndarray) -> bool:
    """Whether the brain mask reaches the image's outer slices (more than a few voxels)."""
    brain = np.asarray(brain, dtype=bool)
    total = int(brain.sum())
    if total == 0:
        return True
    border = 0
    for axis in range(3):
        for index in (0, brain.shape[axis] - 1):
            # a basic index (a view): np.take copies with a slow gather (0.4 s for 1 mm)
            border += int(np.count_nonzero(brain[(slice(None),) * axis + (index,)]))
    return border > CUT_BRAIN_SHARE * total


def head_size(brain: np.ndarray, zooms) -> HeadSize:
    """The head's expected scale against the template, from its brain mask and voxel size."""
    brain = np.asarray(brain, dtype=bool)
    brain_ml = float(brain.sum()) * float(np.prod(np.asarray(zooms[:3], dtype=float))) / 1000.0
    complete = not brain_is_cut(brain)
    if not complete or brain_ml <= 0:
        return HeadSize(brain_ml, complete, 1.0, 1.0)
    expected = TEMPLATE_BRAIN_ML / brain_ml
    initial = expected ** (1 / 3) if brain_ml < SCALED_START_BELOW_ML else 1.0
    return HeadSize(brain_ml, complete, expected, initial)


def size_problem(size: HeadSize) -> str | None:
    """Why a template defacer cannot handle this head (None when it can)."""
    if size.complete and size.brain_ml < MIN_BRAIN_ML:
        return (
            f"the brain is {size.brain_ml:.0f} ml, smaller than the {MIN_BRAIN_ML:g} ml this "
            "template defacer supports (a preterm head, a brain mask that missed most of the "
            "brain, or voxel sizes in the header smaller than the real ones); use a defacer made "
            "for it, or check the brain mask and the header's voxel sizes"
        )
    return None


def registration_problems(reg, brain: np.ndarray, affine: np.ndarray, size: HeadSize) -> list[str]:
    """Problems with a template registration, judged from the brain mask (empty when fine)."""
    from bidsapp.anatomy.registration import PYDEFACE_BRAIN_CENTROID, _centroid

    problems = []
    centre = _centroid(brain, affine)
    mapped = reg.image_points_to_template(centre[None])[0]
    error = float(np.linalg.norm(mapped - np.asarray(PYDEFACE_BRAIN_CENTROID)))
    if error > MAX_CENTRE_ERROR_MM:
        problems.append(f"brain centres {error:.0f} mm apart after registration")
    scale = abs(float(np.linalg.det(reg.image_to_template[:3, :3])))
    low, high = (limit * size.expected_scale for limit in SCALE_RANGE)
    if not low <= scale <= high:
        problems.append(
            f"implausible volume scale {scale:.2f} (expected {low:.2f}-{high:.2f} for a "
            f"{size.brain_ml:.0f} ml brain{'' if size.complete else ' cut by the field of view'})"
        )
    return problems


def checked_registration(image, brain: np.ndarray | None, *, seed: int, work_dir, data=None):
    """Register pydeface's template to ``image`` for its head size; check it against the brain.

    Returns (registration, :class:`HeadSize` or None without a brain mask); raises RuntimeError
    with the reason when the head is outside what the template supports or the result is off.
    ``data``: the image's voxels when already read.
    """
    from bidsapp.anatomy.registration import register_template

    if brain is None or not np.asarray(brain).any():
        reg = register_template(image, seed=seed, work_dir=work_dir, data=data)
        return reg, None
    brain = np.asarray(brain, dtype=bool)
    size = head_size(brain, image.header.get_zooms())
    problem = size_problem(size)
    if problem:
        raise RuntimeError(f"head outside what the template supports: {problem}")
    reg = register_template(image, brain_mask=brain, seed=seed, work_dir=work_dir,
                            initial_scale=size.initial_scale, data=data)
    problems = registration_problems(reg, brain, image.affine, size)
    if problems:
        raise RuntimeError("template registration failed: " + "; ".join(problems))
    return reg, size


def save_checked_registration(path, image, brain: np.ndarray | None, *, seed: int,
                              work_dir) -> None:
    """Run :func:`checked_registration` and write its result, or why it failed, to JSON ``path``.

    Computed once per image and shared by every template defacer
    (:func:`load_checked_registration`).
    """
    from bidsapp.io import atomic_write_json

    try:
        reg, size = checked_registration(image, brain, seed=seed, work_dir=work_dir)
        saved = {"registration": reg.to_json(),
                 "head_size": None if size is None else vars(size), "error": None}
    except RuntimeError as exc:
        saved = {"registration": None, "head_size": None, "error": str(exc)}
    atomic_write_json(Path(path), saved)


def load_checked_registration(path):
    """(registration, HeadSize or None) saved by :func:`save_checked_registration`; raises its
    RuntimeError again when it failed."""
    from bidsapp.anatomy.registration import TemplateRegistration

    saved = json.loads(Path(path).read_text())
    if saved["error"]:
        raise RuntimeError(saved["error"])
    size = saved["head_size"]
    return (TemplateRegistration.from_json(saved["registration"]),
            None if size is None else HeadSize(**size))
