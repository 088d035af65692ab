"""Atomic file writing: an interrupted run never leaves a partial file under a final name;
reading an image's voxels once per process (:func:`load_once`)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.arrayproxy import ArrayProxy
from nibabel.fileslice import canonical_slicers


def _temporary_sibling(path: Path) -> Path:
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}",
                                    dir=path.parent)
    os.close(handle)
    return Path(name)


def _commit(tmp: Path, path: Path) -> None:
    os.chmod(tmp, 0o644)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary sibling of ``path`` to write; rename it over ``path`` on success.

    On failure (a full disk, an interruption) the temporary file is removed and ``path`` keeps
    its previous content; the error names ``path``, not the temporary file.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary_sibling(path)
        yield tmp
        _commit(tmp, path)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, payload: Any) -> None:
    """Write strict JSON (NaN and infinities become null, which every parser accepts)."""
    text = json.dumps(_finite(payload), indent=2, default=_jsonable, allow_nan=False)
    atomic_write_text(path, text + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def atomic_copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def save_like(reference: nib.Nifti1Image, data: np.ndarray, path: Path,
              dtype=None) -> nib.Nifti1Image:
    """Save ``data`` on ``reference``'s grid with its header, atomically; return what was written.

    Without ``dtype``, the reference's stored dtype and scaling are kept, so an unchanged voxel
    is written back bit for bit. ``data`` holds scaled values (as ``np.asanyarray(img.dataobj)``
    returns them).
    """
    header = reference.header.copy()
    slope = getattr(reference.dataobj, "slope", 1.0)
    inter = getattr(reference.dataobj, "inter", 0.0)
    if dtype is None:
        dtype = reference.get_data_dtype()
        raw = np.asarray(data, dtype=np.float64) if (slope, inter) != (1.0, 0.0) else np.asarray(data)
        if (slope, inter) != (1.0, 0.0):
            raw = (raw - inter) / slope
    else:
        raw, slope, inter = np.asarray(data), 1.0, 0.0
        header.set_data_dtype(dtype)
    raw = _cast(raw, np.dtype(dtype))
    image = nib.Nifti1Image(raw, reference.affine, header)
    image.header.set_data_dtype(dtype)
    image.header.set_slope_inter(slope, inter)
    for key in ("sform", "qform"):  # keep both transforms exactly as the input had them
        getter = getattr(reference.header, f"get_{key}")
        matrix, code = getter(coded=True)
        if matrix is not None:
            getattr(image.header, f"set_{key}")(matrix, int(code))
    with atomic_path(path) as tmp:
        image.to_filename(str(tmp))
    return nib.load(str(path))


def as_3d_copy(path: Path, folder: Path) -> Path:
    """A single-volume 4D image (x, y, z, 1, ...) as a 3D copy in ``folder``; 3D: ``path``.

    Every step works on the copy; the defaced image is given back the input's shape when it
    is written (:func:`like_input`). The copy is rewritten only when the input is newer, so a
    rerun finds its cached steps.
    """
    image = nib.load(str(path))
    if len(image.shape) <= 3:
        return Path(path)
    copy = Path(folder) / Path(path).name
    if not copy.is_file() or copy.stat().st_mtime < Path(path).stat().st_mtime:
        volume = np.asanyarray(image.dataobj).reshape(image.shape[:3])
        save_like(image, volume, copy)
    return copy


def like_input(defaced: Path, original: Path, out: Path) -> None:
    """Write ``defaced`` at ``out`` with ``original``'s shape (a 3D result of a 4D input)."""
    reference = nib.load(str(original))
    result = nib.load(str(defaced))
    if result.shape == reference.shape:
        atomic_copy(defaced, out)
        return
    save_like(reference, np.asanyarray(result.dataobj).reshape(reference.shape), out)


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast to ``dtype``, rounding and clipping for integer types."""
    if values.dtype == dtype:
        return values
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    return values.astype(dtype)


def check_writable(folder: Path, what: str) -> None:
    """Fail early, in one line, when ``folder`` cannot be created or written to."""
    from bidsapp.errors import RunError

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".bidsapp-write-test-"):
            pass
    except OSError as exc:
        raise RunError(f"{what} {folder} cannot be written ({exc.strerror or exc}); choose a "
                       "writable folder or fix its permissions") from exc


class _OnceProxy(ArrayProxy):
    """An ArrayProxy that decompresses the whole array once and hands out copies of it."""

    def _get_unscaled(self, slicer):
        whole = canonical_slicers((), self._shape, False)
        if canonical_slicers(slicer, self._shape, False) != whole:
            return super()._get_unscaled(slicer)
        if getattr(self, "_once", None) is None:
            self._once = super()._get_unscaled(slicer)
        return self._once.copy()


def load_once(path) -> nib.Nifti1Image:
    """``nib.load``, except that every full read of ``dataobj`` (``np.asanyarray``,
    ``get_fdata``) after the first copies the first one instead of decompressing the file again:
    the same values, scaling and dtypes, at the cost of keeping the stored array in memory."""
    image = nib.load(str(path))
    if type(image.dataobj) is ArrayProxy:
        image.dataobj.__class__ = _OnceProxy
    return image
