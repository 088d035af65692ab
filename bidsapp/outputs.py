"""Every file bidsapp writes into the output (derivatives) folder is written here.

Layout (``<stem>`` is the input's BIDS name without suffix, e.g. ``sub-01_ses-a_acq-mp``)::

    dataset_description.json
    sub-<label>/[ses-<label>/]anat/
        <stem>_desc-original_<suffix>.json              input record (checks, brain volume)
        <stem>_mod-<suffix>_desc-brain_mask.nii.gz      deepbet brain mask of the original
        <stem>_desc-<defacer>_<suffix>.nii.gz           defaced image, on the input's grid
        <stem>_desc-<defacer>_<suffix>.json             provenance, time, memory, status
        <stem>_mod-<suffix>_desc-<defacer>_defacemask.nii.gz   voxels the defacer altered
    logs/sub-<label>/<stem>_<suffix>_desc-<defacer>.log  the defacer's own output
    logs/sub-<label>/nipype.log, crash/                  workflow log and crash files
    logs/CITATION.md, CITATION.html, CITATION.bib        methods boilerplate of the run
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from filelock import FileLock

from bidsapp import __version__
from bidsapp.bids import AnatImage, derivative_stem, image_folder
from bidsapp.io import atomic_copy, atomic_write_json, atomic_write_text, like_input

BIDS_VERSION = "1.10.0"


def dataset_description() -> dict[str, Any]:
    """``dataset_description.json`` of the derivatives dataset."""
    generated = {"Name": "bidsapp", "Version": __version__,
                 "CodeURL": "https://github.com/bidsapp/bidsapp",
                 "Description": "defacing comparison: several defacers side by side, measured"}
    container = os.environ.get("BIDSAPP_CONTAINER")  # set in the Docker image
    if container:
        generated["Container"] = {"Type": container,
                                  "Tag": os.environ.get("BIDSAPP_CONTAINER_TAG", __version__)}
    return {"Name": "bidsapp defacing comparison", "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative", "GeneratedBy": [generated],
            "HowToAcknowledge": "Cite bidsapp and every defacer you report (see the docs)."}


def write_dataset_description(output_dir: Path, source_dir: Path | None = None) -> Path:
    """Write (or refresh) ``dataset_description.json`` under a lock shared by concurrent runs."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "dataset_description.json"
    payload = dataset_description()
    if source_dir is not None:
        payload["SourceDatasets"] = [{"URL": Path(source_dir).absolute().as_uri()}]
    with FileLock(str(output_dir / ".dataset_description.lock")):
        if path.is_file():
            try:
                if json.loads(path.read_text()) == payload:
                    return path
            except ValueError:
                pass  # a corrupt file is replaced
        atomic_write_json(path, payload)
    return path


def remove_partial_files(output_dir: Path, subject: str) -> int:
    """Delete the temporary files a killed run of ``subject`` left behind; return how many.

    Every output is written to a hidden ``.<name>.<random>.part<ext>`` sibling and renamed
    when complete, so these are never results. Only the participant's own folders are swept:
    a concurrent run on another participant keeps its files in progress.
    """
    folders = [output_dir / f"sub-{subject}", participant_log_dir(output_dir, subject)]
    partial = [path for folder in folders for path in folder.rglob(".*.part*")]
    partial += list(output_dir.glob(f".sub-{subject}.html.*.part*"))
    for path in partial:
        path.unlink(missing_ok=True)
    return len(partial)


def output_path(output_dir: Path, image: AnatImage, *, desc: str, suffix: str | None = None,
                mod: bool = False, ext: str = ".nii.gz") -> Path:
    stem = derivative_stem(image, desc=desc, mod=mod, suffix=suffix)
    return output_dir / image_folder(image) / f"{stem}{ext}"


def log_path(output_dir: Path, image: AnatImage, defacer: str) -> Path:
    return output_dir / "logs" / f"sub-{image.subject}" / f"{image.key}_desc-{defacer}.log"


def participant_log_dir(output_dir: Path, subject: str) -> Path:
    return output_dir / "logs" / f"sub-{subject}"


def write_boilerplate(settings, workflow) -> list[Path]:
    """``logs/CITATION.md``, ``.html`` and ``.bib`` of a participant run, from ``workflow``'s
    descriptions (:mod:`bidsapp.boilerplate`), written atomically: concurrent participant jobs
    sharing ``output_dir`` each leave a whole set. Says once where the IQMs' template is from."""
    from bidsapp.boilerplate import citation_files, log_template_choice

    logs = Path(settings.output_dir) / "logs"
    files = citation_files(workflow)
    for name, text in files.items():
        atomic_write_text(logs / name, text)
    if not settings.skip_metrics:
        log_template_choice()
    return [logs / name for name in files]


def _source(image: AnatImage, bids_dir: Path) -> str:
    try:
        relative = image.path.absolute().relative_to(Path(bids_dir).absolute())
    except ValueError:
        relative = image.path.name
    return f"bids:raw:{relative.as_posix() if isinstance(relative, Path) else relative}"


def write_input_record(output_dir: Path, bids_dir: Path, image: AnatImage,
                       record: dict[str, Any], brain_mask: Path | None = None,
                       measured: dict[str, Any] | None = None) -> list[Path]:
    """The input image's record (and its brain mask, and its face check and IQMs, when computed)."""
    written = []
    if measured:
        record = {**record, **_public(measured)}
    if brain_mask is not None and Path(brain_mask).is_file():
        mask_out = output_path(output_dir, image, desc="brain", suffix="mask", mod=True)
        atomic_copy(brain_mask, mask_out)
        atomic_write_json(mask_out.with_name(mask_out.name.replace(".nii.gz", ".json")),
                          {"Sources": [_source(image, bids_dir)], "Type": "Brain",
                           "Method": "deepbet"})
        written.append(mask_out)
        record = {**record, "brain_mask": str(mask_out.relative_to(output_dir))}
    sidecar = output_path(output_dir, image, desc="original", ext=".json")
    atomic_write_json(sidecar, {"Sources": [_source(image, bids_dir)], **record})
    written.append(sidecar)
    return written


def _public(measured: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in measured.items() if k != "traceback"}


def write_measurements(output_dir: Path, image: AnatImage, defacers: list[str],
                       measured: dict[str, Any]) -> list[Path]:
    """Add the metrics step's results to the records already written (input and defacers).

    Runs after the sinks of the images, never before them: a metrics step that fails leaves
    every defaced image and record in place. Only successful defacer records get metrics.
    """
    written = []
    targets = [(output_path(output_dir, image, desc="original", ext=".json"),
                measured.get("input", {}), False)]
    for name in defacers:
        targets.append((output_path(output_dir, image, desc=name, ext=".json"),
                        measured.get("defacers", {}).get(name, {}), True))
    for sidecar, extra, needs_ok in targets:
        try:
            record = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            continue  # not written (its step failed): nothing to add to
        if not extra or (needs_ok and record.get("status") != "ok"):
            continue
        atomic_write_json(sidecar, {**record, **_public(extra)})
        written.append(sidecar)
    return written


def write_defacer_result(output_dir: Path, bids_dir: Path, image: AnatImage, defacer: str,
                         result_dir: Path, record: dict[str, Any],
                         measured: dict[str, Any] | None = None) -> list[Path]:
    """Copy one defacer's results for one image into the derivatives, atomically.

    The sidecar is written last, so a sidecar with ``status: ok`` means its images are complete.
    """
    from bidsapp.defacers.runner import ALTERED, DEFACED, LOG

    written = []
    log_out = log_path(output_dir, image, defacer)
    if (result_dir / LOG).is_file():
        atomic_copy(result_dir / LOG, log_out)
    image_out = output_path(output_dir, image, desc=defacer)
    mask_out = output_path(output_dir, image, desc=defacer, suffix="defacemask", mod=True)
    ok = record.get("status") == "ok"
    if ok:
        like_input(result_dir / DEFACED, image.path, image_out)  # x*y*z*1 stays x*y*z*1
        atomic_copy(result_dir / ALTERED, mask_out)
        written += [image_out, mask_out]
    else:  # a failed rerun must not leave an older success behind under the same name
        image_out.unlink(missing_ok=True)
        mask_out.unlink(missing_ok=True)
    sidecar = image_out.with_name(image_out.name.replace(".nii.gz", ".json"))
    public = {k: v for k, v in record.items() if k not in ("image", "traceback")}
    if ok and measured:  # defacing metrics, IQMs (both modes) and the seconds each took
        public.update(_public(measured))
    atomic_write_json(sidecar, {
        "Description": f"{image.key} defaced with {defacer}",
        "Sources": [_source(image, bids_dir)],
        **public,
        "log": str(log_out.relative_to(output_dir)),
    })
    written.append(sidecar)
    return written
