"""``bidsapp`` entry point: ``main(argv) -> exit code`` (0 all good, 1 a failure, 2 usage).

Dispatches to the participant level (:mod:`bidsapp.cli.participant`) or the group level
(:func:`bidsapp.group.run_group`, then the export); turns :mod:`bidsapp.errors` into exit codes.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from bidsapp.cli.participant import run_participant  # first: it sets nipype's environment
from bidsapp.errors import RunError, UsageError

LOGGER = logging.getLogger("bidsapp")


def main(argv: list[str] | None = None) -> int:
    from bidsapp.cli.parser import parse_args

    settings = parse_args(argv)
    _setup_console(settings.verbosity)
    try:
        if settings.analysis_level == "participant":
            return run_participant(settings)
        return run_group_level(settings)
    except UsageError as exc:
        print(f"bidsapp: error: {exc}", file=sys.stderr)
        return 2
    except RunError as exc:
        print(f"bidsapp: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the disk filled up while writing outside a workflow step
        if settings.verbosity >= 2:
            raise
        print(f"bidsapp: error: {_os_error(exc)}; rerun the same command to resume once it is "
              "fixed", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bidsapp: interrupted; rerun the same command with the same work dir to resume",
              file=sys.stderr)
        return 130


def _os_error(exc: OSError) -> str:
    """``[Errno 28] No space left on device: 'x'`` as ``x: No space left on device``."""
    where = exc.filename or "a file"
    return f"{where}: {exc.strerror or exc}"


def run_group_level(settings) -> int:
    """Compare the defacers across participants; then export a shareable copy if asked."""
    from bidsapp.group import run_group
    from bidsapp.io import check_writable

    check_writable(settings.output_dir, "output_dir")

    code = run_group(settings)
    if settings.export_dir is not None:
        code = max(code, run_export(settings))
    return code


def run_export(settings) -> int:
    from bidsapp.export import ExportError, export_dataset
    from bidsapp.results import read_verdicts

    defacer = settings.export_defacer or _only_defacer_run(settings.output_dir)
    try:
        report = export_dataset(settings.bids_dir, settings.output_dir, settings.export_dir,
                                defacer, force=settings.export_force,
                                include_defacemask=settings.export_defacemask,
                                extra_fields=settings.scrub_fields,
                                keep_fields=settings.keep_fields,
                                hardlink=not settings.export_copy,
                                verdicts=read_verdicts(settings.output_dir))
    except ExportError as exc:
        raise UsageError(str(exc)) from exc
    LOGGER.info(report.summary())
    return report.exit_code


def _only_defacer_run(output_dir: Path) -> str:
    """The defacer to export when none is named: the only one that succeeded, or the default."""
    from bidsapp.defacers import DEFAULT_DEFACER
    from bidsapp.results import defacers_run

    names = defacers_run(output_dir, succeeded=True)
    if len(names) > 1 and DEFAULT_DEFACER in names:
        return DEFAULT_DEFACER
    if len(names) != 1:
        raise UsageError("choose the defacer to export with --export-defacer NAME (found: "
                         f"{', '.join(sorted(names)) or 'no results'} in {output_dir})")
    return names.pop()


def _setup_console(verbosity: int) -> None:
    level = logging.INFO - 10 * verbosity
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(max(logging.DEBUG, min(logging.ERROR, level)))
    LOGGER.propagate = False


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
