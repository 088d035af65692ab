"""Input discovery with pybids, input checks, and the BIDS names of every output."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
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

    def to_json(self) -> str:
        """The image as JSON text (how workflow nodes pass it to each other)."""
        return json.dumps({"path": str(self.path), "entities": self.entities,
                           "suffix": self.suffix})

    @classmethod
    def from_json(cls, text: str) -> AnatImage:
        """The image :meth:`to_json` wrote."""
        data = json.loads(text)
        return cls(Path(data["path"]), tuple(tuple(e) for e in data["entities"]),
                   data["suffix"])


def load_layout(bids_dir: Path):
    """A read-only pybids layout (no validation, no database written anywhere).

    Sidecar metadata is not indexed: defacing needs none, and one sidecar that is not valid
    JSON would stop pybids for the whole dataset (:func:`check_sidecars` names it instead).
    """
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    from bids import BIDSLayout, BIDSLayoutIndexer

    indexer = BIDSLayoutIndexer(validate=False, index_metadata=False)
    return BIDSLayout(str(bids_dir), validate=False, derivatives=False, indexer=indexer)


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

    Checks the voxel type, shape, voxel sizes, scaling and transforms in the header, then
    reads every voxel, so truncated or corrupt files are caught here rather than mid-run.
    The classes of problems are listed in ``docs/reliability.md``.
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
    problem = _header_problem(image)
    if problem:
        return f"{path}: {problem}"
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
    return None


def _header_problem(image) -> str | None:
    """What in the header (voxel type, shape, voxel sizes, scaling, affine) cannot be used."""
    dtype = image.get_data_dtype()
    if dtype.kind not in "biuf":  # RGB, RGBA, complex: not one intensity per voxel
        label = image.header.get_value_label("datatype") if hasattr(image.header,
                                                                     "get_value_label") else dtype
        return (f"voxel type {label} is not a scalar intensity; convert it to a grayscale "
                "(one value per voxel) image")
    shape = image.shape
    squeezed = tuple(s for s in shape if s > 1)
    if len(shape) > 3 and any(s > 1 for s in shape[3:]):
        return (f"{len(shape)}D image {shape}; anatomical defacing needs one 3D volume, "
                "split it or move it out of anat/")
    if len(squeezed) < 3 or len(shape) < 3 or min(shape[:3]) < 2:
        return f"{len(squeezed)}D image {shape}; a head volume needs three dimensions"
    zooms = np.asarray(image.header.get_zooms()[:3], dtype=float)
    if not np.isfinite(zooms).all() or (zooms <= 0).any():
        return (f"voxel size {tuple(float(z) for z in zooms)} mm is zero, negative or NaN; "
                "fix pixdim in the header (e.g. re-convert with dcm2niix)")
    if not np.isfinite(image.affine).all() or abs(np.linalg.det(image.affine[:3, :3])) < 1e-9:
        return "invalid affine in the header (singular or not finite); fix the sform/qform"
    spacing = np.sqrt((image.affine[:3, :3] ** 2).sum(axis=0))
    if not np.allclose(zooms, spacing, rtol=0.01):  # nibabel reads pixdim 0 as 1
        return (f"voxel sizes in the header (pixdim {_mm(zooms)}) disagree with its transform "
                f"({_mm(spacing)}; a pixdim of 0 reads as 1); fix pixdim or the sform/qform")
    return None


def _mm(values) -> str:
    return " x ".join(f"{float(v):g}" for v in values) + " mm"


def orientation_problem(path: Path) -> str | None:
    """A warning when the header says nothing about orientation (qform and sform codes 0).

    Such an image (old Analyze-derived files) is defaced in the orientation nibabel assumes
    from the voxel sizes alone; the metrics then check that its face and brain agree.
    """
    header = nib.load(str(path)).header
    if "qform_code" not in header:
        return None
    if int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0:
        assumed = "".join(nib.aff2axcodes(nib.load(str(path)).affine))
        return (f"{path}: no orientation in the header (qform_code = sform_code = 0); defaced "
                f"as {assumed} (assumed), check the result or set the sform/qform")
    return None


def check_sidecars(images, bids_dir: Path) -> list[str]:
    """One line per JSON sidecar that applies to ``images`` and is not valid JSON.

    Sidecars beside an image and inherited from its session, participant and dataset folders
    are read (``dataset_description.json`` is :func:`check_dataset`'s).
    """
    root = Path(bids_dir)
    folders = {root}
    for image in images:
        folder = image.path.parent
        while folder != root and root in folder.parents:
            folders.add(folder)
            folder = folder.parent
    problems = []
    for folder in sorted(folders):
        for sidecar in sorted(folder.glob("*.json")):
            if sidecar.name == "dataset_description.json" and folder == root:
                continue
            try:
                json.loads(sidecar.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                problems.append(f"{sidecar}: not valid JSON ({_short(exc)}); fix it (the "
                                "images are defaced without it)")
    return problems


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

def bids_stem(entities: Iterable[tuple[str, str]], suffix: str, *, mod: str | None = None,
              desc: str | None = None) -> str:
    """A BIDS name without extension: entities, then ``mod-``, ``desc-`` and the suffix.

    >>> bids_stem([("sub", "01"), ("acq", "mp")], "defacemask", mod="T1w", desc="quickshear")
    'sub-01_acq-mp_mod-T1w_desc-quickshear_defacemask'
    """
    parts = [f"{k}-{v}" for k, v in entities]
    if mod:
        parts.append(f"mod-{mod}")
    if desc:
        parts.append(f"desc-{desc}")
    parts.append(suffix)
    return "_".join(parts)


def parse_name(name: str) -> tuple[list[tuple[str, str]], str] | None:
    """BIDS entities and suffix of a file name (the inverse of :func:`bids_stem`), or None when
    it is not a BIDS name.

    >>> parse_name("sub-01_acq-se_desc-quickshear_T1w.json")
    ([('sub', '01'), ('acq', 'se'), ('desc', 'quickshear')], 'T1w')
    """
    stem = name.split(".", 1)[0]
    parts = stem.split("_")
    if len(parts) < 2 or not parts[0].startswith("sub-"):
        return None
    entities = []
    for part in parts[:-1]:
        key, sep, value = part.partition("-")
        if not sep or not value:
            return None
        entities.append((key, value))
    return entities, parts[-1]


def derivative_stem(image: AnatImage | str, *, desc: str | None = None, mod: bool = False,
                    suffix: str | None = None) -> str:
    """BIDS-derivatives stem for an output of ``image`` (an image, or its key).

    ``mod`` adds ``mod-<suffix>`` (used with masks so a T1w's and a FLAIR's never collide);
    ``suffix`` replaces the image's suffix.

    >>> img = AnatImage(Path("x"), (("sub", "01"), ("acq", "mp")), "T1w")
    >>> derivative_stem(img, desc="quickshear")
    'sub-01_acq-mp_desc-quickshear_T1w'
    >>> derivative_stem("sub-01_acq-mp_T1w", desc="quickshear", mod=True, suffix="defacemask")
    'sub-01_acq-mp_mod-T1w_desc-quickshear_defacemask'
    """
    if isinstance(image, str):
        parsed = parse_name(image)
        if parsed is None:
            raise ValueError(f"{image!r} is not a BIDS image key (sub-<label>_..._<suffix>)")
        entities, own = parsed
    else:
        entities, own = image.entities, image.suffix
    return bids_stem(entities, suffix or own, mod=own if mod else None, desc=desc)


def image_folder(image: AnatImage) -> Path:
    """Relative folder of an image's outputs: ``sub-X[/ses-Y]/anat``."""
    folder = Path(f"sub-{image.subject}")
    if image.session:
        folder = folder / f"ses-{image.session}"
    return folder / "anat"
