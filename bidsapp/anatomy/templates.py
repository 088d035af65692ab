"""Package data of other wheels that bidsapp uses (templates, masks), found without a network."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def pydeface_file(name: str) -> Path:
    """Path of a data file shipped in the pydeface wheel (``mean_reg2mean.nii.gz``, ``facemask.nii.gz``)."""
    path = Path(str(resources.files("pydeface") / "data" / name))
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: install pydeface (`pip install pydeface`, a dependency of bidsapp)"
        )
    return path
