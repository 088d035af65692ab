"""The participant level: check the inputs, run one nipype workflow holding a sub-workflow per
participant, draw the reports, read back what was written and print the closing summary.

Returns the exit code (0 all good, 1 a failure); raises :class:`bidsapp.errors.UsageError`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NIPYPE_NO_ET", "1")  # no network at run time (nipype's version check)
os.environ.setdefault("KERAS_BACKEND", "torch")

from bidsapp.cli.progress import Progress  # noqa: E402 (after the environment)
from bidsapp.errors import UsageError  # noqa: E402
from bidsapp.io import check_writable  # noqa: E402

LOGGER = logging.getLogger("bidsapp")


def _setup_nipype(log_dir: Path, crash_dir: Path, verbosity: int) -> None:
    """Send nipype's own log to a file, never to the terminal (unless -vv)."""
    from nipype import config
    from nipype import logging as nlogging

    log_dir.mkdir(parents=True, exist_ok=True)
    config.update_config({
        "logging": {"log_directory": str(log_dir), "log_to_file": True,
                    "workflow_level": "INFO", "interface_level": "INFO"},
        "execution": {"crashdump_dir": str(crash_dir), "crashfile_format": "txt",
                      "hash_method": "timestamp", "stop_on_first_crash": False,
                      "remove_unnecessary_outputs": False, "check_version": False,
                      "create_report": False},
        "monitoring": {"enabled": False},
    })
    nlogging.update_logging(config)
    for name in ("nipype.workflow", "nipype.interface", "nipype.utils", "nipype"):
        logger = logging.getLogger(name)
        logger.handlers = [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
        logger.propagate = verbosity >= 2


def run_participant(settings) -> int:
    from bidsapp import outputs
    from bidsapp.bids import (
        check_dataset, check_image, check_sidecars, find_anatomical_images, load_layout,
    )
    from bidsapp.reports.participant import write_reports
    from bidsapp.workflows.participant import plan_images

    start = time.time()
    layout = _layout_or_error(load_layout, settings.bids_dir)
    subjects = layout.get_subjects()
    missing = [s for s in settings.participant_labels if s not in subjects]
    if missing:
        raise UsageError(f"participant(s) {', '.join(missing)} not found in {settings.bids_dir}; "
                         f"available: {', '.join(sorted(subjects)) or 'none'}")
    images = find_anatomical_images(layout, subjects=settings.participant_labels,
                                    sessions=settings.session_labels,
                                    suffixes=settings.modalities)
    if not images:
        raise UsageError(_no_image_message(settings))
    check_writable(settings.output_dir, "output_dir")
    check_writable(settings.work_dir, "work dir")
    outputs.write_dataset_description(settings.output_dir, settings.bids_dir)
    for subject in sorted({image.subject for image in images}):
        if outputs.remove_partial_files(settings.output_dir, subject):
            LOGGER.info("removed the partial files an interrupted run of sub-%s left", subject)

    failures = []
    dataset_problem = check_dataset(settings.bids_dir)
    if dataset_problem:  # reported and counted, but every image is still defaced
        LOGGER.error("input problem: %s", dataset_problem)
        failures.append(("dataset", "dataset", dataset_problem, None))
    for problem in check_sidecars(images, settings.bids_dir):  # reported; images still defaced
        LOGGER.error("input problem: %s", problem)
        failures.append(("sidecar", "dataset", problem, None))
    problems, valid = {}, []
    for image in images:
        problem = check_image(image.path)
        if problem:
            problems[image.key] = problem
            LOGGER.error("input problem: %s", problem)
            outputs.write_input_record(settings.output_dir, settings.bids_dir, image,
                                       {"status": "failed", "error": problem})
        else:
            valid.append(image)
    LOGGER.info("bidsapp %s: %d image(s) of %d participant(s), defacers: %s",
                _version(), len(images), len({i.subject for i in images}),
                ", ".join(settings.defacers))
    records = {image.key: _input_record(image) for image in valid}
    for record in records.values():
        if record.get("orientation_warning"):
            LOGGER.warning("input warning: %s", record["orientation_warning"])
    failures += [(image.key, "input", problems[image.key], None)
                 for image in images if image.key in problems]
    reported: set[str] = set()
    if valid:
        crashed, reported = _run_workflow(settings, valid, records)
        failures += crashed
    # the workflow draws each report; these are the participants it could not reach (no valid
    # image, or a step the report waits for crashed): drawn here from what was written
    unreached = sorted({image.subject for image in images} - reported)
    failures += [(f"sub-{subject} report", "report", message, None) for subject, message in
                 write_reports(settings.output_dir, unreached, show_faces=settings.show_faces,
                               bids_dir=settings.bids_dir)]
    plans = {p.image.key: p for p in plan_images(valid)}
    return _summarise(settings, images, plans, failures, time.time() - start)


def _version() -> str:
    from bidsapp import __version__

    return __version__


def _layout_or_error(load_layout, bids_dir: Path):
    try:
        return load_layout(bids_dir)
    except Exception as exc:
        raise UsageError(f"{bids_dir} cannot be indexed as a BIDS dataset ({exc}); check that it "
                         "is a BIDS dataset with a dataset_description.json") from exc


def _no_image_message(settings) -> str:
    filters = []
    if settings.participant_labels:
        filters.append("participants " + ", ".join(settings.participant_labels))
    if settings.session_labels:
        filters.append("sessions " + ", ".join(settings.session_labels))
    if settings.modalities:
        filters.append("suffixes " + ", ".join(settings.modalities))
    where = f" for {'; '.join(filters)}" if filters else ""
    return (f"no anatomical image (anat/*.nii[.gz]) matched{where} in {settings.bids_dir}; "
            "check the filters (--participant-label, --session-label, --modalities)")


def _input_record(image) -> dict:
    import nibabel as nib
    import numpy as np

    from bidsapp.bids import orientation_problem

    img = nib.load(str(image.path))
    warning = orientation_problem(image.path)
    return {"status": "ok", "error": None, "shape": list(img.shape[:3]),
            "input_shape": list(img.shape),
            "zooms_mm": [round(float(z), 4) for z in img.header.get_zooms()[:3]],
            "orientation": "".join(nib.aff2axcodes(img.affine)),
            "orientation_in_header": warning is None, "orientation_warning": warning,
            "dtype": str(img.get_data_dtype()),
            "oblique": bool(np.abs(nib.affines.obliquity(img.affine)).max() > 1e-3)}


def _run_workflow(settings, images, records) -> tuple[list[tuple], set[str]]:
    """Build and run one workflow holding a sub-workflow per participant; return the failures
    and the participants whose report step ran."""
    from nipype.pipeline import engine as pe

    from bidsapp.outputs import participant_log_dir, write_boilerplate
    from bidsapp.workflows.participant import init_participant_wf
    from bidsapp.workflows.plugin import ResilientMultiProcPlugin

    subjects = sorted({image.subject for image in images})
    log_dir = settings.output_dir / "logs"
    _setup_nipype(log_dir, log_dir / "crash", settings.verbosity)
    top = pe.Workflow(name="bidsapp_wf", base_dir=str(settings.work_dir))
    from bidsapp.io import as_3d_copy
    sources = {image.key: as_3d_copy(image.path, settings.work_dir / "inputs_3d")
               for image in images}  # single-volume 4D images are processed as 3D
    for subject in subjects:
        mine = [image for image in images if image.subject == subject]
        sub_wf = init_participant_wf(settings=settings, subject=subject, images=mine,
                                     input_records=records, defacers=list(settings.defacers),
                                     sources=sources)
        crash_dir = participant_log_dir(settings.output_dir, subject) / "crash"
        sub_wf.config["execution"] = {"crashdump_dir": str(crash_dir)}
        top.add_nodes([sub_wf])
    write_boilerplate(settings, top)  # logs/CITATION.* from the workflow's descriptions
    os.environ["BIDSAPP_WORKER_LOG"] = str(log_dir / "workers.log")
    progress = Progress(top)
    plugin_args = {"n_procs": settings.nprocs, "status_callback": progress,
                   "raise_insufficient": False, "mp_context": "spawn"}
    if settings.mem_gb:
        plugin_args["memory_gb"] = settings.mem_gb
    try:
        top.run(plugin=ResilientMultiProcPlugin(plugin_args=plugin_args))
    except RuntimeError as exc:  # nipype raises after the run when a node crashed
        LOGGER.debug("workflow finished with errors: %s", exc)
    return progress.failures, progress.reported


def _summarise(settings, images, plans, failures, elapsed: float) -> int:
    """Read back what was written, print the closing summary; 0 only if everything succeeded."""
    from bidsapp.outputs import output_path

    log_dir = settings.output_dir / "logs"
    crashed = {name: crash for name, kind, crash, _ in failures if kind == "crash"}
    crashes = {name: crash.reason for name, crash in crashed.items()}
    explained: set[str] = set()
    problems = [f"{name}: {message}" for name, kind, message, _ in failures
                if kind in ("dataset", "report")]
    for image in images:
        if any(f[0] == image.key and f[1] == "input" for f in failures):
            problems.append(f"{image.key}: {next(f[2] for f in failures if f[0] == image.key)}")
            continue
        problems += _measurement_problems(
            image.key, output_path(settings.output_dir, image, desc="original", ext=".json"))
        for name in settings.defacers:
            sidecar = output_path(settings.output_dir, image, desc=name, ext=".json")
            try:
                record = json.loads(sidecar.read_text())
            except (OSError, ValueError):
                causes = [c for c, crash in crashed.items() if crash.explains(image.key, name)]
                explained.update(causes)
                reason = "; ".join(dict.fromkeys(crashes[c] for c in causes)) or (
                    f"no result was written ({sidecar.name} missing)")
                problems.append(f"{image.key} / {name}: {reason} (logs: {log_dir})")
                continue
            if record.get("status") != "ok":
                problems.append(f"{image.key} / {name}: {record.get('error')} "
                                f"(log: {settings.output_dir / record.get('log', 'logs')})")
            else:
                problems += _measurement_problems(f"{image.key} / {name}", sidecar, record)
    for name, kind, _, where in failures:
        if kind == "crash" and name not in explained:
            problems.append(f"{name}: {crashes[name]} (crash file under {log_dir}; "
                            f"node folder {where})")
    runs = sum(1 for i in images if i.key in plans) * len(settings.defacers)
    LOGGER.info("")
    LOGGER.info("bidsapp finished in %.0f s: %d image(s), %d defacer run(s), %d problem(s).",
                elapsed, len(images), runs, len(problems))
    LOGGER.info("Results: %s", settings.output_dir)
    if problems:
        print("Problems:", file=sys.stderr)
        for line in problems:
            print(f"  - {line}", file=sys.stderr)
        return 1
    return 0


def _measurement_problems(label: str, sidecar: Path, record: dict | None = None) -> list[str]:
    """A record's failed metric families and a failed orientation check, one line each."""
    if record is None:
        try:
            record = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            return []
    lines = [f"{label}: {family} metrics failed: {reason} (the defaced images are kept)"
             for family, reason in (record.get("measurement_errors") or {}).items()]
    check = record.get("orientation_check") or {}
    if check.get("agrees") is False:
        lines.append(f"{label}: {record.get('orientation_warning') or 'orientation'}; "
                     f"{check.get('check')}")
    return lines
