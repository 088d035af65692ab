"""Byte-level NIfTI editing: blank the header's text fields, drop extensions and gzip metadata.

Voxel data, dtype, scaling and transforms are copied byte for byte; only the header text, the
extensions and what gzip stores besides the data (file name, comment, time stamp) go.
"""

from __future__ import annotations

import gzip
import io
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from nibabel.nifti1 import Nifti1Header
from nibabel.nifti2 import Nifti2Header
from nibabel.volumeutils import endian_codes

#: NIfTI header text fields blanked in every NIfTI of the export (dcm2niix writes the
#: acquisition time into ``descrip``). ``data_type`` is ANALYZE's unused text field.
NIFTI_TEXT_FIELDS = ("descrip", "aux_file", "db_name", "intent_name", "data_type")

#: gzip level of rewritten NIfTI files: level 1 is four times faster than 6 and, on MRI data,
#: about 2 % larger (nibabel's default too).
GZIP_LEVEL = 1


def nifti_identifiers(path: Path) -> dict[str, list]:
    """What :func:`clean_nifti` would clear in the NIfTI at ``path`` (empty lists: nothing).

    Keys: ``header_fields`` (non-empty text fields), ``extensions`` (their codes),
    ``gzip_header`` (file name, comment, extra field or time stamp stored by gzip).
    """
    path = Path(path)
    with _open_nifti(path) as stream:
        parsed = _parse_prefix(stream)
    return {"header_fields": parsed.text_fields, "extensions": parsed.extensions,
            "gzip_header": _gzip_header_items(path)}


def clean_nifti(src: Path, dst: Path) -> dict[str, list]:
    """Write ``src`` to ``dst`` with header text fields blank and no extensions.

    The voxel data bytes, dtype, scaling and transforms are untouched; ``dst`` is gzipped (with
    no file name and a zero time stamp) when its name ends in ``.gz``. Returns what was cleared,
    as :func:`nifti_identifiers`.
    """
    src, dst = Path(src), Path(dst)
    with _open_nifti(src) as stream:
        parsed = _parse_prefix(stream)
        header = parsed.header
        for name in parsed.text_fields:
            header[name] = b""
        header["vox_offset"] = parsed.size + 4
        with _open_output(dst) as out:
            out.write(header.binaryblock)
            out.write(b"\x00\x00\x00\x00")  # extension flag: none follow
            shutil.copyfileobj(stream, out, 1 << 20)
    return {"header_fields": parsed.text_fields, "extensions": parsed.extensions,
            "gzip_header": _gzip_header_items(src)}


def cleared_entry(cleared: dict[str, list]) -> dict[str, list]:
    """What :func:`clean_nifti` cleared, under the report's key names, empty lists left out."""
    renamed = {"header_fields": "header_fields_cleared", "extensions": "extensions_dropped",
               "gzip_header": "gzip_header_cleared"}
    return {renamed[k]: v for k, v in cleared.items() if v}


@dataclass
class _Prefix:
    header: Nifti1Header | Nifti2Header
    size: int  # 348 or 540
    text_fields: list[str]
    extensions: list[int]


def _open_nifti(path: Path) -> BinaryIO:
    real = Path(path).resolve()
    with open(real, "rb") as handle:
        magic = handle.read(2)
    return gzip.open(real, "rb") if magic == b"\x1f\x8b" else open(real, "rb")


@contextmanager
def _open_output(path: Path) -> Iterator[BinaryIO]:
    """Write ``path``, gzipped (no file name, zero time stamp) when it ends in ``.gz``."""
    with open(path, "wb") as raw:
        if str(path).endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                               compresslevel=GZIP_LEVEL) as out:
                yield out
        else:
            yield raw


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ValueError("truncated NIfTI header")
    return data


def _parse_prefix(stream: BinaryIO) -> _Prefix:
    """Read the header and extensions, leaving ``stream`` at the first voxel byte."""
    first = _read_exactly(stream, 4)
    size = next((n for n in (int.from_bytes(first, "little"), int.from_bytes(first, "big"))
                 if n in (348, 540)), None)
    if size is None:
        raise ValueError("not a NIfTI-1 or NIfTI-2 file")
    klass = Nifti1Header if size == 348 else Nifti2Header
    header = klass(first + _read_exactly(stream, size - 4), check=False)
    offset = int(header["vox_offset"])
    if offset < size + 4:
        raise ValueError(f"vox_offset {offset} is below {size + 4}: not a single-file NIfTI")
    rest = _read_exactly(stream, offset - size)  # extension flag, extensions, padding
    codes: list[int] = []
    if rest[:1] != b"\x00":
        byteswap = endian_codes["native"] != header.endianness
        try:
            extensions = klass.exts_klass.from_fileobj(io.BytesIO(rest[4:]), len(rest) - 4,
                                                       byteswap)
            codes = [int(ext.get_code()) for ext in extensions] or [-1]
        except Exception:  # noqa: BLE001 - unreadable extensions are dropped all the same
            codes = [-1]
    text = [name for name in NIFTI_TEXT_FIELDS if name in header
            and np.asarray(header.structarr[name]).tobytes().strip(b"\x00")]
    return _Prefix(header=header, size=size, text_fields=text, extensions=codes)


def _gzip_header_items(path: Path) -> list[str]:
    """What a gzip member header stores besides the data: file name, comment, extra, time."""
    with open(Path(path).resolve(), "rb") as handle:
        head = handle.read(10)
    if len(head) < 10 or head[:2] != b"\x1f\x8b":
        return []
    flags, items = head[3], []
    for bit, name in ((0x08, "file name"), (0x10, "comment"), (0x04, "extra field")):
        if flags & bit:
            items.append(name)
    if int.from_bytes(head[4:8], "little"):
        items.append("time stamp")
    return items
