"""Input discovery with pybids, input checks, and the BIDS names of every output."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

#: Anatomical suffixes bidsapp defaces, in the order they are reported.
ANAT_SUFFIXES = (
    "T1w", "T2w", "FLAIR", "PDw", "T2starw", "inplaneT1", "inplaneT2", "PDT2", "angio",
    "T1map", "T2map", "T2starmap", "R1map", "R2map", "R2starmap", "PDmap", "MTRmap", "MTsat",
    "UNIT1", "MP2RAGE", "MEGRE", "MESE", "VFA", "IRT1", "MPM", "MTS", "MTR",
)
#: Largest intensity magnitude accepted: 32-bit processing squares intensities (variances,
#: sums of squares), which overflows past about 1.8e19.
MAX_INTENSITY = 1e18
#: Entities that make an anatomical image's name unique, in BIDS order.
ENTITY_ORDER = (("subject", "sub"), ("session", "ses"), ("acquisition", "acq"),
                ("ceagent", "ce"), ("reconstruction", "rec"), ("run", "run"),
                ("echo", "echo"), ("part", "part"))


@dataclass(frozen=True)
class AnatImage:
    """One anatomical image found in the input dataset, with its BIDS entities."""

    path: Path
    entities: tuple[tuple[str, str], ...]  # (bids key, value) in BIDS order, suffix excluded
    suffix: str

    @property
    def subject(self) -> str:
        return dict(self.entities)["sub"]

    @property
    def session(self) -> str | None:
        return dict(self.entities).get("ses")

    @property
    def key(self) -> str:
        """Unique, filename-safe identifier, e.g. ``sub-01_ses-a_acq-mp_T1w``."""
        return "_".join([f"{k}-{v}" for k, v in self.entities] + [self.suffix])

    def entity(self, name: str) -> str | None:
        return dict(self.entities).get(name)


def load_layout(bids_dir: Path):
    """A read-only pybids layout (no validation, no database written anywhere)."""
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    from bids import BIDSLayout

    return BIDSLayout(str(bids_dir), validate=False, derivatives=False)


def find_anatomical_images(layout, *, subjects=(), sessions=(), suffixes=()) -> list[AnatImage]:
    """Every anatomical NIfTI image matching the filters, sorted by name."""
    query = {"datatype": "anat", "extension": [".nii", ".nii.gz"],
             "suffix": list(suffixes) if suffixes else list(ANAT_SUFFIXES)}
    if subjects:
        query["subject"] = list(subjects)
    if sessions:
        query["session"] = list(sessions)
    images = []
    for bids_file in layout.get(**query):
        ents = bids_file.get_entities()
        entities = tuple((short, str(ents[long])) for long, short in ENTITY_ORDER if long in ents)
        images.append(AnatImage(Path(bids_file.path), entities, ents["suffix"]))
    return sorted(images, key=lambda image: image.key)


def check_image(path: Path) -> str | None:
    """Why the image at ``path`` cannot be defaced, or None when it is fine.

    Reads every voxel, so truncated or corrupt files are caught here rather than mid-run.
    """
    if path.is_symlink() and not path.exists():
        return (f"{path}: broken symbolic link (an unfetched DataLad/git-annex file?); "
                "fetch it with `datalad get` first")
    try:
        if path.stat().st_size == 0:
            return f"{path}: empty file (0 bytes); replace it with the real image"
        with open(path, "rb"):  # nibabel would hide a permission problem behind its own error
            pass
        image = nib.load(str(path))
    except PermissionError:
        return f"{path}: not readable (permission denied); give the user read access"
    except Exception as exc:
        return f"{path}: cannot be read as NIfTI ({_short(exc)}); re-export or re-convert it"
    shape = image.shape
    squeezed = tuple(s for s in shape if s > 1)
    if len(shape) > 3 and any(s > 1 for s in shape[3:]):
        return (f"{path}: {len(shape)}D image {shape}; anatomical defacing needs one 3D volume, "
                "split it or move it out of anat/")
    if len(squeezed) < 3:
        return f"{path}: {len(squeezed)}D image {shape}; a head volume needs three dimensions"
    try:
        data = np.asanyarray(image.dataobj)
    except Exception as exc:
        return f"{path}: image data cannot be read ({_short(exc)}); the file is truncated or corrupt"
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        return f"{path}: contains NaN or Inf voxels; replace them (e.g. with 0) before defacing"
    if not data.any():
        return f"{path}: every voxel is zero; there is no head to deface"
    largest = float(np.abs(data).max())
    if largest > MAX_INTENSITY:
        return (f"{path}: intensities reach {largest:.1e}, beyond the {MAX_INTENSITY:.0e} that "
                "32-bit brain extraction and registration can handle; rescale the image")
    if not np.isfinite(image.affine).all() or abs(np.linalg.det(image.affine[:3, :3])) < 1e-9:
        return f"{path}: invalid affine in the header; fix the sform/qform"
    return None


def check_dataset(bids_dir: Path) -> str | None:
    """Why ``bids_dir`` is not a valid BIDS dataset at its root, or None.

    A problem here does not stop the run (every image is still defaced) but makes it exit 1.
    """
    path = Path(bids_dir) / "dataset_description.json"
    if not path.is_file():
        return (f"{path}: missing; every BIDS dataset needs one (with Name and BIDSVersion), "
                "add it so that the outputs can cite their source")
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{path}: not valid JSON ({_short(exc)}); fix or regenerate it"
    missing = [key for key in ("Name", "BIDSVersion")
               if not isinstance(description, dict) or key not in description]
    if missing:
        return f"{path}: required field(s) {', '.join(missing)} missing; add them"
    return None


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


# --- output names -------------------------------------------------------------------------

def derivative_stem(image: AnatImage, *, desc: str | None = None, mod: bool = False,
                    suffix: str | None = None) -> str:
    """BIDS-derivatives stem for an output of ``image``.

    ``mod`` adds ``mod-<suffix>`` (used with masks so a T1w's and a FLAIR's never collide);
    ``suffix`` replaces the image's suffix.

    >>> img = AnatImage(Path("x"), (("sub", "01"), ("acq", "mp")), "T1w")
    >>> derivative_stem(img, desc="quickshear")
    'sub-01_acq-mp_desc-quickshear_T1w'
    >>> derivative_stem(img, desc="quickshear", mod=True, suffix="defacemask")
    'sub-01_acq-mp_mod-T1w_desc-quickshear_defacemask'
    """
    parts = [f"{k}-{v}" for k, v in image.entities]
    if mod:
        parts.append(f"mod-{image.suffix}")
    if desc:
        parts.append(f"desc-{desc}")
    parts.append(suffix or image.suffix)
    return "_".join(parts)


def image_folder(image: AnatImage) -> Path:
    """Relative folder of an image's outputs: ``sub-X[/ses-Y]/anat``."""
    folder = Path(f"sub-{image.subject}")
    if image.session:
        folder = folder / f"ses-{image.session}"
    return folder / "anat"
