"""Defacers that are external programs: pydeface, mri_deface, fsl_deface, mridefacer, AFNI, SPM.

Each is a thin wrapper on :class:`~bidsapp.defacers.external.tool.ExternalDefacer` (stage the
input, run one command, collect its output onto the input's grid), one module per tool family:
:mod:`~bidsapp.defacers.external.fsl`, :mod:`~bidsapp.defacers.external.freesurfer`,
:mod:`~bidsapp.defacers.external.afni`, :mod:`~bidsapp.defacers.external.spm`. The registry
(:data:`bidsapp.defacers.REGISTRY`) names them through this package.

``python -m bidsapp.defacers.external [--require NAME ...]`` prints the availability table; the
container build runs it as a smoke test.
"""

from __future__ import annotations

import sys

from bidsapp.defacers.external.afni import AfniDeface, AfniReface
from bidsapp.defacers.external.freesurfer import MriDeface
from bidsapp.defacers.external.fsl import FslDeface, MriDefacer, PyDeface
from bidsapp.defacers.external.spm import SpmDeface

#: Every external defacer, in the registry's order.
EXTERNAL_DEFACERS = (PyDeface, MriDeface, FslDeface, MriDefacer, AfniDeface, AfniReface,
                     SpmDeface)

__all__ = ["EXTERNAL_DEFACERS", "AfniDeface", "AfniReface", "FslDeface", "MriDeface",
           "MriDefacer", "PyDeface", "SpmDeface", "main"]


def main(argv: list[str] | None = None) -> int:
    """Print each external defacer's availability; exit 1 if a ``--require``d one is missing."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bidsapp.defacers.external",
                                     description=main.__doc__)
    names = [cls.name for cls in EXTERNAL_DEFACERS]
    parser.add_argument("--require", nargs="+", default=[], choices=names + ["all"],
                        metavar="NAME", help=f"fail unless these are available: {names} or all")
    args = parser.parse_args(argv)
    required = set(names) if "all" in args.require else set(args.require)
    failed = []
    for cls in EXTERNAL_DEFACERS:
        found = cls().availability()
        state = f"available, version {found.version}" if found.available else found.reason
        print(f"{cls.name:12s} {state}")
        if cls.name in required and not found.available:
            failed.append(cls.name)
    if failed:
        print(f"required but not available: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
