"""The verdict on one defacing result: did it remove the face and keep the brain?

A pure function of the result's record, shared by the group tables, the reports and the
export. A result **passes** when all of these hold (a measure that is missing is not counted,
but a result without the brain or the face measure is ``n/a``):

1. the defacer succeeded;
2. the brain is preserved: no voxel of the original's brain mask was altered;
3. the face regions are removed: at least :data:`FACE_REMOVED_MIN_PCT` percent of the face's
   skin and at least :data:`FEATURE_REMOVED_MIN_PCT` percent of each of :data:`FEATURES`, the
   nose and the mouth (regions located on the original's face, see docs/metrics_defacing.md;
   the eyes and chin are measured and reported, not required);
4. the face is not detected: dlib's CNN detector finds no face on the defaced renders;
5. the person is not re-identified (when the identification attack was run).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: Percent of the face's skin that must be altered.
FACE_REMOVED_MIN_PCT = 40.0
#: Percent of each feature's skin (:data:`FEATURES`) that must be altered.
FEATURE_REMOVED_MIN_PCT = 35.0
#: The features whose removal is required (the chin is measured, not required).
FEATURES = ("nose", "mouth")


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return True


def _flag(value: Any) -> bool | None:
    """True, False or None (not measured) from a bool, 0/1 or NaN cell."""
    return None if _missing(value) else bool(float(value))


def verdict(status: Any, brain_voxels: Any, face_pct: Any,
            features: Mapping[str, Any] | None = None, face_detected: Any = None,
            reidentified: Any = None, *, face_min: float = FACE_REMOVED_MIN_PCT,
            feature_min: float = FEATURE_REMOVED_MIN_PCT) -> tuple[str, str]:
    """``(verdict, reason)``: verdict is ``pass``, ``fail`` or ``n/a``.

    ``features`` maps region names (eyes, nose, mouth, ...) to their altered percentage;
    ``face_detected`` and ``reidentified`` are True, False or None (not measured).

    >>> verdict("ok", 0, 95.0, {"eyes": 90, "nose": 100, "mouth": 100}, False)
    ('pass', 'no brain voxel altered; 95% of the face removed (nose 100%, mouth 100%); no face detected')
    >>> verdict("ok", 0, 95.0, {"eyes": 100, "nose": 20, "mouth": 100})
    ('fail', 'nose: 20% removed (< 35%)')
    >>> verdict("ok", 12, 95.0)[0], verdict("ok", 0, 39.0)[0], verdict("ok", 0, float("nan"))[0]
    ('fail', 'fail', 'n/a')
    >>> verdict("ok", 0, 95.0, face_detected=True)[1]
    'a face is still detected'
    >>> verdict("ok", 0, 95.0, reidentified=True)[1]
    're-identified'
    >>> verdict("error", 0, 95.0)
    ('fail', 'the defacer failed')
    """
    if status != "ok":
        return "fail", "the defacer failed"
    features = {name: features[name] for name in FEATURES
                if features and name in features and not _missing(features[name])}
    detected, matched = _flag(face_detected), _flag(reidentified)
    reasons = []
    if not _missing(brain_voxels) and float(brain_voxels) > 0:
        reasons.append(f"{float(brain_voxels):.0f} brain voxel(s) altered")
    if not _missing(face_pct) and float(face_pct) < face_min:
        reasons.append(f"{float(face_pct):.0f}% of the face removed (< {face_min:g}%)")
    for name, value in features.items():
        if float(value) < feature_min:
            reasons.append(f"{name}: {float(value):.0f}% removed (< {feature_min:g}%)")
    if detected:
        reasons.append("a face is still detected")
    if matched:
        reasons.append("re-identified")
    if reasons:
        return "fail", "; ".join(reasons)
    missing = [name for name, value in (("brain voxels altered", brain_voxels),
                                        ("face removed", face_pct)) if _missing(value)]
    if missing:
        return "n/a", f"metric(s) missing: {', '.join(missing)}"
    text = f"no brain voxel altered; {float(face_pct):.0f}% of the face removed"
    if features:
        text += " (" + ", ".join(f"{n} {float(v):.0f}%" for n, v in features.items()) + ")"
    if detected is False:
        text += "; no face detected"
    if matched is False:
        text += "; not re-identified"
    return "pass", text
