"""Image level: every anatomical IQM of one image, from its arrays or from the image itself."""

from __future__ import annotations

import math
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from bidsapp.anatomy.masks import IQMMasks, compute_masks
from bidsapp.anatomy.segmentation import Tissues, image_data, match_to_template, segment_tissues
from bidsapp.metrics.iqms.measures import (
    TISSUE_LABELS, efc, fber, fwhm_classic, icvs, inu, qi_1, rpve, snr, snr_dietrich,
    tpm_overlap, wm2max,
)
from bidsapp.metrics.iqms.qi2 import qi_2
from bidsapp.metrics.iqms.stats import harmonize, summary_stats


def _ras_view(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    ornt = nib.io_orientation(affine)
    return nib.orientations.apply_orientation(array, ornt)


def iqms_from_arrays(
    data: np.ndarray,
    zooms,
    masks: IQMMasks,
    tissues: Tissues,
    *,
    affine: np.ndarray | None = None,
) -> dict[str, float]:
    """Every anatomical IQM of one image, with MRIQC's keys.

    ``data`` is the raw image, ``zooms`` its voxel sizes (mm), ``masks``/``tissues`` from
    :func:`bidsapp.anatomy.masks.compute_masks` and
    :func:`bidsapp.anatomy.segmentation.segment_tissues`. ``affine`` (optional) puts the hat
    voxels in RAS order for QI2's random subsample, as MRIQC does after conforming to RAS.
    """
    zooms = [float(z) for z in zooms[:3]]
    axes = masks.ras_axes
    inudata = harmonize(tissues.corrected, tissues.probs["wm"])
    pvms = {k: tissues.probs[k] for k in TISSUE_LABELS}
    stats = summary_stats(inudata, {**pvms, "bg": masks.air})
    out: dict[str, float] = {}

    out["cjv"] = float(
        (stats["wm"]["mad"] + stats["gm"]["mad"])
        / abs(stats["wm"]["median"] - stats["gm"]["median"])
    )
    out["cnr"] = float(
        abs(stats["wm"]["median"] - stats["gm"]["median"])
        / math.sqrt(stats["bg"]["stdv"] ** 2 + stats["gm"]["stdv"] ** 2 + stats["wm"]["stdv"] ** 2)
    )
    out["efc"] = efc(inudata, masks.rot)
    out["fber"] = fber(inudata, masks.head, masks.rot)
    fwhm = fwhm_classic(data, masks.brain)
    fx, fy, fz = (fwhm[a] for a in axes)
    out.update(fwhm_x=fx, fwhm_y=fy, fwhm_z=fz, fwhm_avg=float(np.mean([fx, fy, fz])))
    for k, v in icvs(pvms).items():
        out[f"icvs_{k}"] = v
    for k, v in inu(tissues.bias, tissues.labels).items():
        out[f"inu_{k}"] = v
    out["qi_1"] = qi_1(masks.air, masks.art)
    if affine is not None:
        out["qi_2"] = qi_2(_ras_view(data, affine), _ras_view(masks.hat, affine))
    else:
        out["qi_2"] = qi_2(data, masks.hat)
    for k, v in rpve(pvms).items():
        out[f"rpve_{k}"] = v
    for name, axis in zip("xyz", axes):
        out[f"size_{name}"] = int(data.shape[axis])
        out[f"spacing_{name}"] = zooms[axis]
    snrs = {k: snr(stats[k]["median"], stats[k]["stdv"], stats[k]["n"]) for k in TISSUE_LABELS}
    for k in ("csf", "wm", "gm"):
        out[f"snr_{k}"] = snrs[k]
    out["snr_total"] = float(np.mean([snrs["csf"], snrs["wm"], snrs["gm"]]))
    snrd = {
        k: snr_dietrich(stats[k]["median"], stats["bg"]["mad"], stats["bg"]["stdv"])
        for k in ("csf", "wm", "gm")
    }
    for k, v in snrd.items():
        out[f"snrd_{k}"] = v
    out["snrd_total"] = float(np.mean(list(snrd.values())))
    for label in ("bg", "csf", "gm", "wm"):
        for stat in ("mean", "median", "p05", "p95", "stdv", "k", "mad", "n"):
            out[f"summary_{label}_{stat}"] = stats[label][stat]
    for k, v in tpm_overlap(pvms, masks.template).items():
        out[f"tpm_overlap_{k}"] = v
    out["wm2max"] = wm2max(inudata, stats["wm"]["median"])
    return dict(sorted(out.items()))



@dataclass(frozen=True)
class ImageIQMs:
    """IQMs of one image and the tissues and masks they came from."""

    iqms: dict[str, float]
    tissues: Tissues
    masks: IQMMasks


def image_iqms(
    image: nib.Nifti1Image,
    brain_mask: np.ndarray,
    *,
    tissues: Tissues | None = None,
    masks: IQMMasks | None = None,
    threads: int = 1,
    seed: int = 42,
) -> ImageIQMs:
    """IQMs of one image; ``tissues``/``masks`` are reused when given (computed once)."""
    if tissues is None:
        tissues = segment_tissues(image, brain_mask, threads=threads, seed=seed)
    data = image_data(image)
    if masks is None:
        masks = compute_masks(image, brain_mask, tissues, seed=seed, data=data)
    if masks.template is not None:  # T2w/FLAIR: name the classes after the template
        tissues = match_to_template(tissues, masks.template)
    zooms = image.header.get_zooms()[:3]
    iqms = iqms_from_arrays(data, zooms, masks, tissues, affine=image.affine)
    return ImageIQMs(iqms=iqms, tissues=tissues, masks=masks)
