"""Templates and package data that bidsapp uses, found without a network.

The IQMs' template (tissue maps for ``tpm_overlap_*``, the brain registered for the landmark
planes) is TemplateFlow's ``MNI152NLin2009cAsym`` (MRIQC's) when its files are in
``TEMPLATEFLOW_HOME``, resolved through ``templateflow.api.get``; otherwise nilearn's bundled
ICBM 2009a symmetric maps (:data:`FALLBACK`). bidsapp never downloads at run time: availability
is decided once, from the files on disk (TemplateFlow's stub holds 0-byte placeholders until a
file is fetched), before templateflow is imported, and then with ``TEMPLATEFLOW_AUTOUPDATE`` off.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

#: MRIQC's template (TemplateFlow identifier).
TEMPLATE = "MNI152NLin2009cAsym"
#: The fallback's name in records and logs.
FALLBACK = "MNI ICBM152 2009a nonlinear symmetric (nilearn)"
#: TemplateFlow query (``api.get`` keywords) of each file bidsapp uses.
QUERIES = {
    "T1w": {"suffix": "T1w", "desc": None},
    "T2w": {"suffix": "T2w", "desc": None},
    "brain_mask": {"suffix": "mask", "desc": "brain"},
    "csf": {"suffix": "probseg", "label": "CSF"},
    "gm": {"suffix": "probseg", "label": "GM"},
    "wm": {"suffix": "probseg", "label": "WM"},
}
#: The files the IQMs need (the others are resolved when present).
REQUIRED = ("T1w", "brain_mask", "csf", "gm", "wm")
RESOLUTIONS = (1, 2)


def pydeface_file(name: str) -> Path:
    """Path of a data file shipped in the pydeface wheel (``mean_reg2mean.nii.gz``, ``facemask.nii.gz``)."""
    path = Path(str(resources.files("pydeface") / "data" / name))
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: install pydeface (`pip install pydeface`, a dependency of bidsapp)"
        )
    return path


def templateflow_home() -> Path:
    """``TEMPLATEFLOW_HOME``, or templateflow's default (the user cache folder)."""
    home = os.environ.get("TEMPLATEFLOW_HOME")
    if home:
        return Path(home).absolute()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("templateflow")).absolute()


def file_name(key: str, resolution: int) -> str:
    """TemplateFlow's name of one file, e.g. ``tpl-MNI152NLin2009cAsym_res-01_label-CSF_probseg``.

    >>> file_name("brain_mask", 2)
    'tpl-MNI152NLin2009cAsym/tpl-MNI152NLin2009cAsym_res-02_desc-brain_mask.nii.gz'
    """
    query = QUERIES[key]
    parts = [f"tpl-{TEMPLATE}", f"res-{resolution:02d}"]
    parts += [f"{k}-{query[k]}" for k in ("label", "desc") if query.get(k)]
    return f"tpl-{TEMPLATE}/{'_'.join(parts)}_{query['suffix']}.nii.gz"


def _on_disk(home: Path, key: str, resolution: int) -> bool:
    path = home / file_name(key, resolution)
    return path.is_file() and path.stat().st_size > 0


@dataclass(frozen=True)
class TemplateSource:
    """Where the IQMs' template comes from: ``source`` is 'templateflow' or 'nilearn'."""

    source: str
    name: str
    files: dict[str, str]
    reason: str = ""

    def record(self) -> dict:
        """What a record says about it (``iqm_template``, beside the IQMs)."""
        return {"source": self.source, "name": self.name}

    @property
    def label(self) -> str:
        """Its name in the masks' provenance (``iqm_masks.template``; unchanged offline)."""
        if self.source == "nilearn":
            return "MNI ICBM152 2009a sym (nilearn), affine"
        return f"{self.name}, affine"


@lru_cache(maxsize=1)
def iqm_template(resolution: int = 1) -> TemplateSource:
    """The IQMs' template at ``resolution`` mm: TemplateFlow's files, or the nilearn fallback.

    Decided once per process from the files under :func:`templateflow_home`; nothing is
    downloaded (a 0-byte placeholder counts as missing).
    """
    home = templateflow_home()
    missing = [file_name(k, resolution) for k in REQUIRED if not _on_disk(home, k, resolution)]
    if missing:
        return TemplateSource("nilearn", FALLBACK, {},
                              f"{len(missing)} TemplateFlow file(s) missing from {home}")
    os.environ["TEMPLATEFLOW_HOME"] = str(home)
    os.environ["TEMPLATEFLOW_AUTOUPDATE"] = "0"
    from templateflow import api

    files = {}
    for key, query in QUERIES.items():
        if key in REQUIRED or _on_disk(home, key, resolution):
            found = api.get(TEMPLATE, resolution=resolution, extension=".nii.gz", **query)
            name = Path(file_name(key, resolution)).name
            files[key] = next(str(p) for p in (found if isinstance(found, list) else [found])
                              if Path(p).name == name)
    return TemplateSource("templateflow", f"{TEMPLATE} res-{resolution:02d} (TemplateFlow)",
                          files)



def prefetch() -> list[Path]:
    """Download every file of :data:`QUERIES` at :data:`RESOLUTIONS` into ``TEMPLATEFLOW_HOME``.

    For building the container (needs a network); bidsapp itself never calls it. Fails when a
    required file did not arrive.
    """
    from templateflow import api

    home = templateflow_home()
    for resolution in RESOLUTIONS:
        for query in QUERIES.values():
            api.get(TEMPLATE, resolution=resolution, extension=".nii.gz", **query)
    missing = [file_name(k, r) for r in RESOLUTIONS for k in REQUIRED if not _on_disk(home, k, r)]
    if missing:
        raise RuntimeError(f"TemplateFlow files not fetched into {home}: {', '.join(missing)}")
    return sorted(p for p in (home / f"tpl-{TEMPLATE}").glob("*.nii.gz") if p.stat().st_size)

_NILEARN_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


@lru_cache(maxsize=1)
def tissue_maps() -> dict | None:
    """The IQMs' template: T1 (brain) and CSF/GM/WM probability maps, and their source.

    Returns ``{'t1', 'csf', 'gm', 'wm': float32 arrays, 'affine': 4x4, 'brain_centroid': RAS
    mm, 'source': TemplateSource}``, or ``None`` without TemplateFlow's files and nilearn.
    """
    source = iqm_template()
    out = _templateflow_maps(source.files) if source.source == "templateflow" else _nilearn_maps()
    if out is None:
        return None
    centre = np.argwhere(out["t1"] > 0).mean(axis=0)
    out["brain_centroid"] = nib.affines.apply_affine(out["affine"], centre)
    out["source"] = source
    return out


def _templateflow_maps(files: dict[str, str]) -> dict:
    """TemplateFlow's T1w inside its brain mask, and its CSF/GM/WM ``probseg`` maps."""
    t1 = nib.load(files["T1w"])
    brain = np.asarray(nib.load(files["brain_mask"]).dataobj) > 0.5
    out = {"affine": t1.affine,
           "t1": np.where(brain, np.asarray(t1.dataobj, dtype=np.float32), 0).astype(np.float32)}
    for name in ("csf", "gm", "wm"):
        out[name] = np.clip(np.asarray(nib.load(files[name]).dataobj, dtype=np.float32), 0, 1)
    return out


def _nilearn_maps() -> dict | None:
    """nilearn's ICBM 2009a maps (1 mm); CSF is the smoothed brain (T1 > 0) minus GM and WM."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    images = {k: nib.load(folder / name) for k, name in _NILEARN_FILES.items()}
    out = {"affine": images["t1"].affine}
    out["t1"] = np.asarray(images["t1"].dataobj, dtype=np.float32)
    gm = np.asarray(images["gm"].dataobj, dtype=np.float32) / 255.0
    wm = np.asarray(images["wm"].dataobj, dtype=np.float32) / 255.0
    scale = np.maximum(gm + wm, 1.0)  # the 8-bit maps may add up to slightly above 1
    gm, wm = gm / scale, wm / scale
    brain = ndimage.gaussian_filter((out["t1"] > 0).astype(np.float32), 1.0)
    out["csf"] = np.clip(brain - gm - wm, 0.0, 1.0).astype(np.float32)
    out["gm"], out["wm"] = gm.astype(np.float32), wm.astype(np.float32)
    return out
