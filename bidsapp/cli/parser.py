"""The command line: ``bidsapp bids_dir output_dir {participant,group} [options]``.

:func:`build_parser` is pure (the docs render it); :func:`parse_args` turns arguments into a
:class:`~bidsapp.settings.Settings` or exits 2 with one line naming the problem and the fix.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from bidsapp import __version__
from bidsapp.settings import Settings


def _defacer_table() -> str:
    from bidsapp.defacers import REGISTRY, availability, get_defacer

    lines = ["defacers (name: what it does [available here, or why not]):"]
    for name in REGISTRY:
        found = availability(name)
        state = f"available, {found.version}" if found.available else f"unavailable: {found.reason}"
        lines.append(f"  {name:<12} {get_defacer(name).summary} [{state}]")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line naming the problem and the fix, exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=32, width=100)


def build_parser(*, with_defacer_table: bool = False) -> argparse.ArgumentParser:
    """The argument parser (``with_defacer_table`` adds each defacer's availability to --help)."""
    parser = _Parser(
        prog="bidsapp",
        description="Deface every anatomical image of a BIDS dataset with several defacing tools "
                    "side by side, measure each result, and write a BIDS derivatives dataset. "
                    "The input dataset is never written to.",
        epilog=_defacer_table() if with_defacer_table else None,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("bids_dir", type=Path, help="the input BIDS dataset (read only)")
    parser.add_argument("output_dir", type=Path,
                        help="where the derivatives are written (outside bids_dir)")
    parser.add_argument("analysis_level", choices=["participant", "group"],
                        help="participant: deface and measure; group: compare across participants")
    parser.add_argument("--version", action="version", version=f"bidsapp {__version__}")

    bids = parser.add_argument_group("BIDS filters")
    bids.add_argument("--participant-label", "--participant_label", nargs="+", default=[],
                      metavar="LABEL", help="participants to process (with or without 'sub-'); "
                                            "default: all")
    bids.add_argument("--session-label", "--session_label", nargs="+", default=[],
                      metavar="LABEL", help="sessions to process (with or without 'ses-')")
    bids.add_argument("--modalities", nargs="+", default=[], metavar="SUFFIX",
                      help="anatomical suffixes to deface (T1w, T2w, FLAIR, PDw, T2starw, ...); "
                           "default: every anatomical suffix present")

    deface = parser.add_argument_group("defacing")
    deface.add_argument("--defacers", nargs="+", default=[], metavar="NAME",
                        help="defacers to run (see the list below); default: every defacer "
                             "available on this machine")
    deface.add_argument("--brain-guard", choices=["auto", "on", "off"], default="auto",
                        help="never alter voxels within --guard-margin-mm of the original's "
                             "brain mask; auto: each defacer's default (on for facecut and "
                             "facemask); facecut's own guard follows this and the margin")
    deface.add_argument("--guard-margin-mm", type=float, default=5.0, metavar="MM",
                        help="safety margin around the brain used by the guard, facecut's own "
                             "included (default 5)")
    deface.add_argument("--ears", action="store_true",
                        help="ask defacers that support it to remove the ears too")
    deface.add_argument("--reface", action="store_true",
                        help="ask defacers that support it to fill the removed region with a "
                             "generic face instead of zeros")
    deface.add_argument("--seed", type=int, default=42,
                        help="random seed for every stochastic step (default 42)")

    report = parser.add_argument_group("metrics and reports")
    report.add_argument("--skip-metrics", action="store_true",
                        help="only deface: skip the defacing metrics and image quality metrics")
    report.add_argument("--show-faces", action="store_true",
                        help="allow images of the ORIGINAL face in reports (off by default: a "
                             "report that shows faces is itself identifying data)")
    report.add_argument("--skip-identification", action="store_true",
                        help="group level: skip the re-identification attack (face recognition "
                             "of each defaced output against every original of the dataset)")

    export = parser.add_argument_group(
        "shareable export (group level)",
        "write a de-identified copy of the whole dataset with one defacer's images")
    export.add_argument("--export-dir", type=Path, default=None, metavar="DIR",
                        help="new, empty folder for the shareable copy (outside bids_dir and "
                             "output_dir); the report goes to DIR_deid-report.json beside it")
    export.add_argument("--export-defacer", default=None, metavar="NAME",
                        help="defacer whose images replace the originals (default: facecut when it "
                             "was run, else the only defacer run)")
    export.add_argument("--export-force", action="store_true",
                        help="export even where that defacer failed, altered brain voxels, "
                             "changed nothing or failed the group verdict (face remains or "
                             "re-identified); such images are marked in the report")
    export.add_argument("--export-defacemask", action="store_true",
                        help="also write each image's _defacemask")
    export.add_argument("--export-copy", action="store_true",
                        help="copy files instead of hard-linking them")
    export.add_argument("--scrub-field", action="append", default=[], metavar="KEY",
                        help="also remove this JSON key (repeatable)")
    export.add_argument("--keep-field", action="append", default=[], metavar="KEY",
                        help="keep this JSON key although it is in the default list (repeatable)")

    perf = parser.add_argument_group("performance")
    perf.add_argument("-w", "--work-dir", type=Path, default=None,
                      help="working folder; reusing it resumes an interrupted run "
                           "(default: <output_dir>/../bidsapp_work)")
    perf.add_argument("--nprocs", "--n-cpus", type=int, default=None, metavar="N",
                      help="processes run at once (default: all cores)")
    perf.add_argument("--omp-nthreads", type=int, default=1, metavar="N",
                      help="threads per process (default 1)")
    perf.add_argument("--mem-gb", "--mem", type=float, default=None, metavar="GB",
                      help="memory the scheduler may use (default: what the machine has)")

    other = parser.add_argument_group("other")
    other.add_argument("-v", "--verbose", action="count", default=0,
                       help="more output (repeat for more)")
    other.add_argument("-q", "--quiet", action="count", default=0, help="less output")
    return parser


def _labels(values: list[str], prefix: str) -> tuple[str, ...]:
    return tuple(sorted({v[len(prefix):] if v.startswith(prefix) else v for v in values}))


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _inside(child: Path, parent: Path) -> bool:
    child, parent = child.absolute().resolve(), parent.absolute().resolve()
    return child == parent or parent in child.parents


def parse_args(argv: list[str] | None = None) -> Settings:
    """Parse and check the command line; usage errors exit 2 through ``parser.error``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(with_defacer_table=any(a in ("-h", "--help") for a in argv))
    args = parser.parse_args(argv)
    bids_dir, output_dir = _absolute(args.bids_dir), _absolute(args.output_dir)

    if not bids_dir.is_dir():
        parser.error(f"bids_dir {bids_dir} does not exist or is not a folder; "
                     "give the path of a BIDS dataset")
    if _inside(output_dir, bids_dir):
        parser.error(f"output_dir {output_dir} is bids_dir or inside it; bidsapp never writes "
                     "into the input dataset: choose a folder outside it")
    work_dir = _absolute(args.work_dir or output_dir.parent / "bidsapp_work")
    if _inside(work_dir, bids_dir):
        parser.error(f"work dir {work_dir} is inside bids_dir; choose a folder outside the "
                     "input dataset (-w/--work-dir)")
    if _inside(output_dir, work_dir) or _inside(work_dir, output_dir):
        parser.error(f"work dir {work_dir} and output_dir {output_dir} overlap; keep them "
                     "apart (-w/--work-dir)")
    participants = _labels(args.participant_label, "sub-")
    for label in participants:
        if not re.fullmatch(r"[A-Za-z0-9]+", label):
            parser.error(f"participant label {label!r} is not a BIDS label (letters and digits "
                         "only); give it as in the folder name sub-<label>")
    sessions = _labels(args.session_label, "ses-")
    for label in sessions:
        if not re.fullmatch(r"[A-Za-z0-9]+", label):
            parser.error(f"session label {label!r} is not a BIDS label (letters and digits only)")
    for name, value in (("--nprocs", args.nprocs), ("--omp-nthreads", args.omp_nthreads)):
        if value is not None and value < 1:
            parser.error(f"{name} must be at least 1 (got {value})")
    if args.mem_gb is not None and args.mem_gb <= 0:
        parser.error(f"--mem-gb must be positive (got {args.mem_gb})")
    if args.guard_margin_mm < 0:
        parser.error(f"--guard-margin-mm must be 0 or more (got {args.guard_margin_mm})")

    export_dir = _absolute(args.export_dir) if args.export_dir else None
    if export_dir is not None:
        if args.analysis_level != "group":
            parser.error("--export-dir works at the group level, after the participant runs: "
                         "bidsapp bids_dir output_dir group --export-dir DIR")
        for other, label in ((bids_dir, "bids_dir"), (output_dir, "output_dir")):
            if _inside(export_dir, other) or _inside(other, export_dir):
                parser.error(f"--export-dir {export_dir} overlaps {label}; choose a new folder "
                             "outside both")
    elif any((args.export_defacer, args.export_force, args.export_defacemask, args.scrub_field,
              args.keep_field, args.export_copy)):
        parser.error("the --export-* and --scrub/--keep-field options need --export-dir DIR")

    defacers = tuple(dict.fromkeys(args.defacers))
    if args.analysis_level == "participant":
        defacers = _check_defacers(parser, defacers)
    nprocs = args.nprocs or len(os.sched_getaffinity(0))
    return Settings(
        bids_dir=bids_dir, output_dir=output_dir, analysis_level=args.analysis_level,
        work_dir=work_dir, participant_labels=participants, session_labels=sessions,
        modalities=tuple(dict.fromkeys(args.modalities)), defacers=defacers,
        brain_guard=args.brain_guard, guard_margin_mm=args.guard_margin_mm, ears=args.ears,
        reface=args.reface, seed=args.seed, nprocs=nprocs, omp_nthreads=args.omp_nthreads,
        mem_gb=args.mem_gb, verbosity=args.verbose - args.quiet,
        skip_metrics=args.skip_metrics, show_faces=args.show_faces,
        skip_identification=args.skip_identification, export_dir=export_dir,
        export_defacer=args.export_defacer, export_force=args.export_force,
        export_defacemask=args.export_defacemask, export_copy=args.export_copy,
        scrub_fields=tuple(args.scrub_field), keep_fields=tuple(args.keep_field),
    )


def _check_defacers(parser, requested: tuple[str, ...]) -> tuple[str, ...]:
    from bidsapp.defacers import REGISTRY, availability, available_defacers

    for name in requested:
        if name not in REGISTRY:
            parser.error(f"unknown defacer {name!r}; choose from: {', '.join(REGISTRY)}")
        found = availability(name)
        if not found.available:
            parser.error(f"defacer {name!r} is not available here: {found.reason}")
    if requested:
        return requested
    chosen = tuple(available_defacers())
    if not chosen:
        parser.error("no defacer is available on this machine; see `bidsapp --help` for why")
    return chosen
