"""The export itself: decide every image, build the copy in a hidden folder, publish, report."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from bidsapp.bids import find_anatomical_images, load_layout
from bidsapp.export.decide import Verdicts, check_request, decide_image, unchecked_warnings
from bidsapp.export.paths import is_exported, relative
from bidsapp.export.report import ExportReport, report_path
from bidsapp.export.scrub import DEFAULT_SCRUB_FIELDS, scrub_fields_for
from bidsapp.export.tree import build_tree, publish
from bidsapp.io import atomic_write_json

LOGGER = logging.getLogger("bidsapp.export")


def export_dataset(bids_dir: Path, output_dir: Path, export_dir: Path, defacer: str, *,
                   force: bool = False, include_defacemask: bool = False,
                   scrub_fields: Sequence[str] = DEFAULT_SCRUB_FIELDS,
                   extra_fields: Sequence[str] = (), keep_fields: Sequence[str] = (),
                   hardlink: bool = True, verdicts: Verdicts | None = None) -> ExportReport:
    """Write a shareable copy of ``bids_dir`` into ``export_dir`` (see :mod:`bidsapp.export`).

    ``output_dir`` holds bidsapp's participant-level results; ``defacer`` names the one whose
    images are shipped. Raises :class:`~bidsapp.export.decide.ExportError` for a request that
    cannot work (paths that overlap, a non-empty ``export_dir``, no results of ``defacer``).
    Refused images and failures raise nothing: the returned report says what happened
    (``exit_code`` 1) and is also written to :func:`report_path` ``(export_dir)``.
    ``hardlink=False`` copies every unchanged file instead of linking it (a hard link shares
    its bytes with the original: editing it in place edits both). ``verdicts`` maps (image
    name without extension, defacer) to the group level's ``(verdict, reason)``
    (:func:`bidsapp.group.read_verdicts`): a ``fail`` refuses the image, a missing or ``n/a``
    verdict is a warning (face removal not checked).
    """
    started = time.monotonic()
    bids_dir, output_dir, export_dir = (Path(os.path.abspath(p))
                                        for p in (bids_dir, output_dir, export_dir))
    check_request(bids_dir, output_dir, export_dir, defacer)
    fields = scrub_fields_for(scrub_fields, extra_fields, keep_fields)
    report = ExportReport(status="ok", bids_dir=bids_dir, output_dir=output_dir,
                          export_dir=export_dir, defacer=defacer, force=force,
                          include_defacemask=include_defacemask, scrub_fields=fields,
                          report_path=report_path(export_dir))
    images = [image for image in find_anatomical_images(load_layout(bids_dir))
              if is_exported(relative(image.path, bids_dir))]
    report.images = [decide_image(bids_dir, output_dir, image, defacer, force, verdicts)
                     for image in images]
    report.warnings += unchecked_warnings(report.images, verdicts is not None)

    if report.by_status("refused"):
        report.status = "refused"
    else:
        partial = export_dir.parent / f".{export_dir.name}.partial-{os.getpid()}"
        try:
            build_tree(report, partial, fields, hardlink)
            if report.problems:
                report.status = "failed"
            else:
                publish(partial, export_dir)
        except Exception as exc:  # nothing half-written may look like an export
            LOGGER.exception("export failed")
            report.status = "failed"
            report.problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            if partial.exists():
                shutil.rmtree(partial, ignore_errors=True)
        if not report.ok:
            report.files = {}
    report.seconds = time.monotonic() - started
    atomic_write_json(report.report_path, report.as_json())
    return report
