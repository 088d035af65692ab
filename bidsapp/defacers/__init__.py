"""The registry: one place that lists every defacer bidsapp knows.

Each entry's key is its BIDS ``desc-`` label. Modules are imported on first use, so a broken
optional dependency makes one defacer unavailable (with the reason) instead of breaking the CLI.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import import_module

from bidsapp.defacers.base import Availability, Defacer

#: name -> "module:Class", in the order they are shown and run. Native ones first.
REGISTRY: dict[str, str] = {
    "facecut": "bidsapp.defacers.facecut:FaceCut",  # bidsapp's own default for sharing
    "quickshear": "bidsapp.defacers.quickshear:QuickShear",
    "deepdefacer": "bidsapp.defacers.deepdefacer:DeepDefacer",
    "facemask": "bidsapp.defacers.facemask:FaceMask",
    "niimath": "bidsapp.defacers.niimath:NiimathDeface",
    "pydeface": "bidsapp.defacers.external:PyDeface",
    "mrideface": "bidsapp.defacers.external:MriDeface",
    "fsldeface": "bidsapp.defacers.external:FslDeface",
    "mridefacer": "bidsapp.defacers.external:MriDefacer",
    "afnideface": "bidsapp.defacers.external:AfniDeface",
    "afnireface": "bidsapp.defacers.external:AfniReface",
    "spmdeface": "bidsapp.defacers.external:SpmDeface",
}


class _Missing(Defacer):
    """Stands in for a defacer whose module cannot be imported."""

    def __init__(self, name: str, reason: str):
        self.name, self.title, self._reason = name, name, reason
        self.summary = "cannot be loaded"

    def availability(self) -> Availability:
        return Availability(False, self._reason)


@lru_cache(maxsize=None)
def get_defacer(name: str) -> Defacer:
    """The registry entry called ``name`` (KeyError for an unknown name)."""
    target = REGISTRY[name]
    module_name, _, class_name = target.partition(":")
    try:
        return getattr(import_module(module_name), class_name)()
    except Exception as exc:  # ImportError or an error in the module: report, don't crash
        return _Missing(name, f"its module {module_name} cannot be loaded ({exc})")


@lru_cache(maxsize=None)
def availability(name: str) -> Availability:
    """Cached availability of the defacer called ``name``."""
    try:
        return get_defacer(name).availability()
    except Exception as exc:  # an availability check must never crash the CLI
        return Availability(False, f"availability check failed: {exc}")


#: The defacer bidsapp recommends for a shareable copy when the user names none.
DEFAULT_DEFACER = "facecut"


def available_defacers() -> list[str]:
    """Names of the defacers that can run on this machine, in registry order."""
    return [name for name in REGISTRY if availability(name).available]
