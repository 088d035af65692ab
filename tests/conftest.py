"""Shared fixtures: where the real test data lives, and skip reasons when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def testdata_root() -> Path | None:
    """The shared test data: $BIDSAPP_TESTDATA, else ../shared/testdata beside the checkout."""
    candidates = [os.environ.get("BIDSAPP_TESTDATA"), REPO.parent / "shared" / "testdata"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "ds-faces").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def testdata() -> Path:
    root = testdata_root()
    if root is None:
        reason = "test data not found: set BIDSAPP_TESTDATA or put shared/testdata beside the repo"
        if os.environ.get("BIDSAPP_REQUIRE_TESTDATA"):
            pytest.fail(reason)  # CI must run these tests, never skip them
        pytest.skip(reason)
    return root


@pytest.fixture(scope="session")
def ds_faces(testdata) -> Path:
    return testdata / "ds-faces"


@pytest.fixture(scope="session")
def ds_defaced(testdata) -> Path:
    return testdata / "ds-defaced"


@pytest.fixture(scope="session")
def pydeface_template() -> Path:
    """The 1 mm head template with a face that ships in the pydeface wheel."""
    from bidsapp.anatomy.templates import pydeface_file

    return pydeface_file("mean_reg2mean.nii.gz")


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root`` (symlinks by target name), for read-only checks."""
    import hashlib

    hashes = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            hashes[str(path.relative_to(root))] = "link:" + os.readlink(path)
        elif path.is_file():
            hashes[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes
