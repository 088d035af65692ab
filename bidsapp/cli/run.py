"""``bidsapp`` entry point: ``main(argv) -> exit code`` (0 all good, 1 a failure, 2 usage)."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("NIPYPE_NO_ET", "1")  # no network at run time (nipype's version check)
os.environ.setdefault("KERAS_BACKEND", "torch")

LOGGER = logging.getLogger("bidsapp")


class UsageError(Exception):
    """A problem with what the user asked for, reported in one line with exit code 2."""


class RunError(Exception):
    """The run cannot go on (e.g. the output folder cannot be written): one line, exit code 1."""


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


def check_writable(folder: Path, what: str) -> None:
    """Fail early, in one line, when ``folder`` cannot be created or written to."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".bidsapp-write-test-"):
            pass
    except OSError as exc:
        raise RunError(f"{what} {folder} cannot be written ({exc.strerror or exc}); choose a "
                       "writable folder or fix its permissions") from exc


def run_group_level(settings) -> int:
    """Compare the defacers across participants; then export a shareable copy if asked."""
    from bidsapp.group import run_group

    check_writable(settings.output_dir, "output_dir")

    code = run_group(settings)
    if settings.export_dir is not None:
        code = max(code, run_export(settings))
    return code


def run_export(settings) -> int:
    from bidsapp.export import ExportError, export_dataset
    from bidsapp.group import read_verdicts

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

    names = {m.group(1) for p in output_dir.glob("sub-*/**/anat/*_desc-*_defacemask.nii.gz")
             if (m := re.search(r"_desc-([A-Za-z0-9]+)_defacemask", p.name))}
    from bidsapp.defacers import DEFAULT_DEFACER

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
    if valid:
        failures += _run_workflow(settings, valid, records)
    failures += _write_reports(settings, sorted({image.subject for image in images}))
    plans = {p.image.key: p for p in plan_images(valid)}
    return _summarise(settings, images, plans, failures, time.time() - start)


def _write_reports(settings, subjects: list[str]) -> list[tuple]:
    """One HTML report per participant; a report that fails is a failure, not a crash."""
    from bidsapp.reports.participant import write_participant_report

    failures = []
    for subject in subjects:
        try:
            path = write_participant_report(settings.output_dir, subject,
                                            show_faces=settings.show_faces,
                                            bids_dir=settings.bids_dir)
            LOGGER.info("report: %s", path)
        except Exception as exc:
            LOGGER.error("the report of sub-%s failed: %s", subject, exc)
            failures.append((f"sub-{subject} report", "report", str(exc), None))
    return failures


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


def _run_workflow(settings, images, records) -> list[tuple]:
    """Build and run one workflow holding a sub-workflow per participant; return failures."""
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
    return progress.failures


class Progress:
    """nipype status callback: what is running, done and failed, with the elapsed time."""

    def __init__(self, workflow):
        self.start = time.time()
        graph = workflow._create_flat_graph()
        self.total = sum(1 for node in graph.nodes() if hasattr(node, "bidsapp_label"))
        self.done = self.failed = 0
        self.running: set[str] = set()
        self.failures: list[tuple] = []

    @staticmethod
    def _label(node) -> str:
        return getattr(node, "bidsapp_label", node.name)

    def __call__(self, node, status: str) -> None:
        if not hasattr(node, "bidsapp_label"):  # sinks and list merges: report crashes only
            if status == "exception":
                self._crashed(node)
            return
        label = self._label(node)
        if status == "start":
            self.running.add(label)
            LOGGER.debug("[%s] started %s", self._clock(), label)
            return
        self.running.discard(label)
        if status == "exception":
            self.failed += 1
            reason = self._crashed(node)
            LOGGER.error("[%s] FAILED %s: %s", self._clock(), label, reason)
        else:
            self.done += 1
            record = self._record(node)
            if record and record.get("status") != "ok":
                self.failed += 1
                LOGGER.error("[%s] FAILED %s: %s", self._clock(), label, record.get("error"))
            else:
                extra = ""
                if record:
                    extra = f" ({record.get('wall_time_s', 0):.1f} s, " \
                            f"{record.get('peak_rss_mb', 0):.0f} MB)"
                LOGGER.info("[%s] done %s%s", self._clock(), label, extra)
        LOGGER.info("[%s] %d/%d done, %d failed, %d running", self._clock(), self.done,
                    self.total, self.failed, len(self.running))

    def _crashed(self, node) -> str:
        # nipype writes the crash file after this callback: the summary reads the reason
        self.failures.append((node.name, "crash", None, str(Path(node.output_dir()))))
        return "see the summary at the end"

    @staticmethod
    def _record(node) -> dict | None:
        if not node.name.startswith("deface_"):
            return None
        path = Path(node.output_dir()) / "run" / "record.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def _clock(self) -> str:
        seconds = int(time.time() - self.start)
        return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def crash_reason(log_dir: Path, node_name: str) -> str:
    """The last line of the newest nipype crash file of ``node_name``: the error itself."""
    crash_files = sorted(log_dir.glob(f"**/crash-*-{node_name}-*.txt"),
                         key=lambda path: path.stat().st_mtime)
    if not crash_files:
        return "the step crashed"
    try:
        lines = [line.strip() for line in crash_files[-1].read_text(errors="replace").splitlines()]
    except OSError:
        return "the step crashed"
    errors = [line for line in lines if re.match(r"[\w.]+(Error|Exception|Died)\b", line)]
    errors = errors or [line for line in lines if line and not line.startswith(("File ", "^"))]
    return f"the step crashed: {errors[-1][:300]}" if errors else "the step crashed"


def _summarise(settings, images, plans, failures, elapsed: float) -> int:
    """Read back what was written, print the closing summary; 0 only if everything succeeded."""
    from bidsapp.outputs import output_path

    log_dir = settings.output_dir / "logs"
    crashes = {name: crash_reason(log_dir, name) for name, kind, _, _ in failures
               if kind == "crash"}
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
                causes = _crashes_of(crashes, image.key, name)
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


def _crashes_of(crashes: dict[str, str], image_key: str, defacer: str) -> list[str]:
    """Crashed nodes behind a missing result: the image's own steps or this defacer's."""
    from bidsapp.workflows.participant import node_name

    image_part = node_name("", image_key)
    return [name for name in crashes if name.endswith(image_part)
            and (f"_{defacer}_" in name or name.startswith(("brainmask_", "coreg_")))]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
