"""Bad and unusual input images made from real heads, and ways to run bidsapp as users do.

Used by the unit tests of the input checks (test_bids) and by the whole-run reliability tests
(test_reliability). Nothing here writes outside the folders it is given.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

#: Images that must be rejected, with words the one-line reason must contain.
REJECTED = {
    "truncated": "truncated or corrupt",
    "notgzip": "cannot be read",
    "gzipjunk": "cannot be read",
    "zerobytes": "empty file",
    "fourd": "4D",
    "twod": "2D",
    "nan": "NaN or Inf",
    "inf": "NaN or Inf",
    "allzero": "every voxel is zero",
    "huge": "rescale the image",
    "brokenlink": "broken symbolic link",
    "rgb": "not a scalar intensity",
    "complex": "not a scalar intensity",
    "fived": "5D",
    "zerozoom": "disagree with its transform",
    "nanzoom": "voxel size",
    "singular": "invalid affine",
    "badinter": "invalid intercept",
}
#: Unusual but valid images that must be defaced like any other (``fourd1``: a single-volume
#: 4D image, x*y*z*1; ``noorient``: qform and sform codes 0, as old Analyze-derived files).
ACCEPTED = ("oblique", "thick", "float64", "fourd1", "noorient")
#: Valid headers checked by the unit tests only (a whole run of each would add little).
ACCEPTED_HEADERS = ("slope0", "nanslope", "int8", "uint16", "fived1")


def write_case(case: str, path: Path, head: Path) -> Path:
    """Write the edge case ``case`` at ``path`` (``.nii.gz``), made from the real ``head``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.load(str(head))
    data = np.asanyarray(image.dataobj)
    if case == "truncated":
        content = head.read_bytes()
        path.write_bytes(content[: len(content) // 2])
    elif case == "notgzip":
        path.write_bytes(b"this is not a NIfTI file at all\n" * 20)
    elif case == "gzipjunk":
        path.write_bytes(gzip.compress(b"\x00" * 1000))
    elif case == "zerobytes":
        path.write_bytes(b"")
    elif case == "fourd":
        _save(path, np.stack([data] * 3, axis=-1), image.affine)
    elif case == "twod":
        _save(path, data[:, :, data.shape[2] // 2 : data.shape[2] // 2 + 1], image.affine)
    elif case in ("nan", "inf"):
        values = data.astype(np.float32)
        values[tuple(s // 2 for s in values.shape)] = np.nan if case == "nan" else np.inf
        _save(path, values, image.affine)
    elif case == "allzero":
        _save(path, np.zeros_like(data), image.affine)
    elif case == "huge":  # float64 far beyond what 32-bit processing can hold
        _save(path, data.astype(np.float64) * 1e300, image.affine)
    elif case == "brokenlink":  # an unfetched git-annex file
        os.symlink("../../.git/annex/objects/Xx/Yy/MD5E-s1--0.nii.gz/MD5E-s1--0.nii.gz", path)
    elif case == "oblique":  # the same head, its affine rotated 30 degrees about x
        angle = np.deg2rad(30)
        rotation = np.eye(4)
        rotation[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
        _save(path, data, rotation @ image.affine, header=image.header)
    elif case == "thick":  # 1x1x6 mm: six slices averaged into one, as a thick 2D acquisition
        values = data.astype(np.float32)
        count = values.shape[2] // 6
        values = values[:, :, : count * 6].reshape(*values.shape[:2], count, 6).mean(axis=3)
        affine = np.diag([1.0, 1.0, 6.0, 1.0])
        affine[:3, 3] = image.affine[:3, 3]
        _save(path, np.rint(values).astype(np.int16), affine)
    elif case == "float64":  # float64 with large (but representable) intensities
        _save(path, data.astype(np.float64) * 1e12, image.affine)
    elif case == "rgb":  # RGB24, as some viewers and screenshots export
        gray = np.rint(255 * data / max(float(data.max()), 1.0)).astype(np.uint8)
        rgb = np.zeros(gray.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        for channel in "RGB":
            rgb[channel] = gray
        _save(path, rgb, image.affine)
    elif case == "complex":
        _save(path, data.astype(np.complex64), image.affine)
    elif case in ("fourd1", "fived", "fived1"):  # x*y*z*1 (converters), x*y*z*1*3, x*y*z*1*1
        extra = {"fourd1": (1,), "fived": (1, 3), "fived1": (1, 1)}[case]
        _save(path, np.broadcast_to(data.reshape(data.shape + (1,) * len(extra)),
                                    data.shape + extra).copy(), image.affine)
    elif case in ("zerozoom", "nanzoom", "singular", "noorient", "badinter", "slope0",
                  "nanslope"):
        _save(path, data, image.affine)
        _edit_header(path, case)
    elif case in ("int8", "uint16"):
        scaled = data.astype(np.float64) * (100 if case == "int8" else 30000) / float(data.max())
        _save(path, np.rint(scaled).astype(case), image.affine)
    else:
        raise ValueError(f"unknown edge case {case!r}")
    return path


def _save(path: Path, data: np.ndarray, affine: np.ndarray, header=None) -> None:
    image = nib.Nifti1Image(data, affine, header)
    image.set_data_dtype(data.dtype)
    image.set_qform(affine, 1)
    image.set_sform(affine, 1)
    nib.save(image, str(path))


def _edit_header(path: Path, case: str) -> None:
    """Rewrite one header field of the file at ``path`` in place, keeping its voxels."""
    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj.get_unscaled())
    header = image.header.copy()
    if case in ("zerozoom", "nanzoom"):
        header["pixdim"][2] = 0.0 if case == "zerozoom" else np.nan
    elif case == "singular":  # an sform of zeros, no qform
        header["sform_code"], header["qform_code"] = 1, 0
        for row in "xyz":
            header[f"srow_{row}"] = 0
    elif case == "noorient":
        header["sform_code"], header["qform_code"] = 0, 0
    elif case in ("badinter", "slope0", "nanslope"):
        slope, inter = {"badinter": (2.0, np.nan), "slope0": (0.0, 0.0),
                        "nanslope": (np.nan, np.nan)}[case]
        header["scl_slope"], header["scl_inter"] = slope, inter
    header["vox_offset"] = 352  # 348 header bytes, 4 for "no extension"
    blob = header.binaryblock
    with open(path.with_suffix(".tmp"), "wb") as handle:  # header bytes exactly as set
        handle.write(blob + b"\0" * 4)
        handle.write(np.asfortranarray(data).astype(header.get_data_dtype()).tobytes("F"))
    with open(path.with_suffix(".tmp"), "rb") as source, gzip.open(path, "wb") as target:
        shutil.copyfileobj(source, target)
    path.with_suffix(".tmp").unlink()


def make_dataset(root: Path, participants: dict[str, Path], *, description: bool = True) -> Path:
    """A BIDS dataset with one T1w per participant label, copied from the given files."""
    root.mkdir(parents=True, exist_ok=True)
    if description:
        (root / "dataset_description.json").write_text(
            json.dumps({"Name": "bidsapp reliability test", "BIDSVersion": "1.9.0"}))
    for label, source in participants.items():
        target = root / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return root


def bidsapp_command(*args) -> list[str]:
    return [sys.executable, "-m", "bidsapp", *map(str, args)]


def run(command: list[str], *, timeout: float = 3000, env: dict | None = None
        ) -> tuple[subprocess.CompletedProcess, float]:
    """Run a command to its end; return the result and its wall time in seconds."""
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    return proc, time.perf_counter() - start


def run_bidsapp(*args, **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    return run(bidsapp_command(*args), **kwargs)


def explain(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


# --- permissions, mounts and namespaces -------------------------------------------------------

def privileged() -> str | None:
    """Why the root-only tests (mounts, namespaces, dropped capabilities) cannot run, or None."""
    if os.geteuid() != 0:
        return "needs root (mounts, network namespaces, capabilities)"
    for tool in ("unshare", "setpriv", "mount"):
        if shutil.which(tool) is None:
            return f"needs {tool} (util-linux)"
    probe = subprocess.run(["unshare", "-n", "-m", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"namespaces are not allowed here: {probe.stderr.strip()}"
    return None


def require_privileges() -> None:
    """Skip where these tests cannot run; in CI (BIDSAPP_REQUIRE_ROOT=1) fail instead."""
    import pytest

    reason = privileged()
    if reason:
        if os.environ.get("BIDSAPP_REQUIRE_ROOT"):
            pytest.fail(reason)
        pytest.skip(reason)


def with_permission_checks(command: list[str]) -> list[str]:
    """``command`` as root without the capabilities that bypass file permissions, so a file
    with mode 000 cannot be read and a folder with mode 555 cannot be written, as for any user.
    (Another user cannot be used: the interpreter may live in root's private home.)"""
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *command]
