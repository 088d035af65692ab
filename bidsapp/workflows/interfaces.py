"""Thin nipype interfaces around bidsapp's functions (the work happens in the functions)."""

from __future__ import annotations

import json
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits,
)


def _run_step(args: list[str], cwd: Path, threads: int, module: str = "bidsapp.anatomy"):
    """Run ``python -m MODULE ARGS`` in a fresh process; raise with its log on failure; return
    its :class:`bidsapp.child.ChildResult` (wall time, peak memory)."""
    from bidsapp.child import run_child

    name = args[0] if module == "bidsapp.anatomy" else module.rsplit(".", 1)[-1]
    log = cwd / f"{name}.log"
    result = run_child([module, *args], log=log, cwd=cwd, threads=threads)
    if result.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{name} failed (exit {result.returncode}): " + " | ".join(tail))
    return result


class _BrainMaskInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="original image")
    threads = traits.Int(1, usedefault=True)


class _BrainMaskOutputSpec(TraitedSpec):
    out_mask = File(exists=True, desc="deepbet brain mask on the image grid (uint8)")


class BrainMask(SimpleInterface):
    """deepbet brain mask of the original image (computed once, reused by every defacer)."""

    input_spec = _BrainMaskInputSpec
    output_spec = _BrainMaskOutputSpec

    def _run_interface(self, runtime):
        out = Path(runtime.cwd) / "brain_mask.nii.gz"
        _run_step(["brainmask", self.inputs.in_file, str(out), str(self.inputs.threads)],
                  Path(runtime.cwd), self.inputs.threads)
        self._results["out_mask"] = str(out)
        return runtime


class _TemplateRegistrationInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="original image")
    brain_mask = File(exists=True, mandatory=True, desc="deepbet brain mask of the original")
    seed = traits.Int(42, usedefault=True)


class _TemplateRegistrationOutputSpec(TraitedSpec):
    registration = File(exists=True, desc="JSON: the registration (or why it failed), its cost")


class TemplateRegistration(SimpleInterface):
    """pydeface's template registered to the image once, for every template defacer.

    The JSON holds the step's wall time and peak memory (``cost``): each defacer's record
    repeats them under ``shared_steps``, as its own ``wall_time_s`` no longer includes them.
    """

    input_spec = _TemplateRegistrationInputSpec
    output_spec = _TemplateRegistrationOutputSpec

    def _run_interface(self, runtime):
        from bidsapp.io import atomic_write_json

        cwd = Path(runtime.cwd)
        out = cwd / "template_registration.json"
        usage = _run_step(["template", self.inputs.in_file, self.inputs.brain_mask, str(out),
                           str(self.inputs.seed)], cwd, 1)
        saved = json.loads(out.read_text())
        saved["cost"] = {"wall_time_s": usage.wall_time_s, "peak_rss_mb": usage.peak_rss_mb,
                         "cpu_time_s": usage.cpu_time_s}
        atomic_write_json(out, saved)
        self._results["registration"] = str(out)
        return runtime


class _CoregisterInputSpec(BaseInterfaceInputSpec):
    target = File(exists=True, mandatory=True, desc="the T2w/FLAIR/... image")
    t1w = File(exists=True, mandatory=True, desc="the session's T1w")
    t1w_brain_mask = File(exists=True, mandatory=True)
    seed = traits.Int(42, usedefault=True)
    threads = traits.Int(1, usedefault=True)


class _CoregisterOutputSpec(TraitedSpec):
    transform = File(exists=True, desc="rigid transform, T1w onto target (ANTs .mat)")
    out_mask = File(exists=True, desc="T1w brain mask carried onto the target grid")


class Coregister(SimpleInterface):
    """Rigid registration of the session T1w onto another anatomical image of the session."""

    input_spec = _CoregisterInputSpec
    output_spec = _CoregisterOutputSpec

    def _run_interface(self, runtime):
        cwd = Path(runtime.cwd)
        _run_step(["coregister", self.inputs.target, self.inputs.t1w, self.inputs.t1w_brain_mask,
                   str(cwd), str(self.inputs.seed), str(self.inputs.threads)],
                  cwd, self.inputs.threads)
        self._results.update(transform=str(cwd / "t1w_to_target.mat"),
                             out_mask=str(cwd / "brain_mask.nii.gz"))
        return runtime


class _DefaceInputSpec(BaseInterfaceInputSpec):
    defacer = traits.Str(mandatory=True)
    in_file = File(exists=True, mandatory=True)
    brain_mask = File(exists=True, desc="brain mask of the original (deepbet or carried)")
    guard = traits.Bool(False, usedefault=True)
    guard_margin_mm = traits.Float(5.0, usedefault=True)
    seed = traits.Int(42, usedefault=True)
    threads = traits.Int(1, usedefault=True)
    options = traits.Dict(usedefault=True)
    source_image = traits.Str(desc="T1w whose altered mask is carried over (transfer mode)")
    source_record = traits.Dict(desc="the T1w's defacer record (transfer mode)")
    source_altered = traits.Str(desc="the T1w's altered-voxel mask (transfer mode)")
    transform = File(exists=True, desc="rigid transform T1w -> this image (transfer mode)")
    registration = File(exists=True, desc="shared template registration (template defacers)")


class _DefaceOutputSpec(TraitedSpec):
    record = traits.Dict(desc="the run's record (status, times, memory, provenance)")
    result_dir = traits.Str(desc="folder with defaced.nii.gz, altered.nii.gz, record.json")
    altered = traits.Str(desc="altered-voxel mask, empty when the run failed")


class Deface(SimpleInterface):
    """One defacer on one image, in a measured child process. Never raises on tool failure."""

    input_spec = _DefaceInputSpec
    output_spec = _DefaceOutputSpec

    def _run_interface(self, runtime):
        from bidsapp.defacers.runner import ALTERED, make_spec, run_measured

        out_dir = Path(runtime.cwd) / "run"
        transfer = None
        if self.inputs.transform:
            source = dict(self.inputs.source_record)
            if source.get("status") != "ok":
                record = {"defacer": self.inputs.defacer, "status": "failed",
                          "mode": "carried-from-T1w", "source_image": self.inputs.source_image,
                          "error": f"defacing of the session T1w ({Path(self.inputs.source_image).name}) "
                                   f"with {self.inputs.defacer} failed, so its mask cannot be carried over"}
                self._results.update(record=record, result_dir=str(out_dir), altered="")
                return runtime
            transfer = {"source_image": self.inputs.source_image,
                        "source_altered": self.inputs.source_altered,
                        "transform": self.inputs.transform}
        spec = make_spec(
            defacer=self.inputs.defacer, image=Path(self.inputs.in_file), out_dir=out_dir,
            brain_mask=Path(self.inputs.brain_mask) if self.inputs.brain_mask else None,
            guard=self.inputs.guard, guard_margin_mm=self.inputs.guard_margin_mm,
            seed=self.inputs.seed, threads=self.inputs.threads, options=self.inputs.options,
            transfer=transfer,
            registration=Path(self.inputs.registration) if self.inputs.registration else None,
        )
        record = run_measured(spec)
        altered = out_dir / ALTERED
        self._results.update(record=record, result_dir=str(out_dir),
                             altered=str(altered) if record["status"] == "ok" else "")
        return runtime


class _MeasureOriginalInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="original image")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask of the original")
    seed = traits.Int(42, usedefault=True)
    threads = traits.Int(1, usedefault=True)


class _MeasureOriginalOutputSpec(TraitedSpec):
    input_file = File(exists=True, desc="JSON: the input's face check and IQMs")
    state = File(exists=True, desc="what every result is compared with (pickle)")


class MeasureOriginal(SimpleInterface):
    """The original's metrics stage, once per image (one child process)."""

    input_spec = _MeasureOriginalInputSpec
    output_spec = _MeasureOriginalOutputSpec

    def _run_interface(self, runtime):
        cwd = Path(runtime.cwd)
        spec = {"image": self.inputs.in_file, "brain_mask": self.inputs.brain_mask,
                "threads": self.inputs.threads, "seed": self.inputs.seed,
                "out": str(cwd / "input.json"), "state": str(cwd / "original.pkl")}
        _measure(cwd, "original", spec, self.inputs.threads)
        self._results["input_file"], self._results["state"] = spec["out"], spec["state"]
        return runtime


class _MeasureResultsInputSpec(BaseInterfaceInputSpec):
    state = File(exists=True, mandatory=True, desc="the original's stage (MeasureOriginal)")
    defacers = traits.List(traits.Str, mandatory=True)
    records = traits.List(traits.Dict, mandatory=True, desc="each defacer's record, same order")
    result_dirs = traits.List(traits.Str, mandatory=True, desc="each defacer's result folder")
    image_key = traits.Str(mandatory=True, desc="the image's key (names what is kept)")
    threads = traits.Int(1, usedefault=True)


class _MeasureResultsOutputSpec(TraitedSpec):
    results_file = File(exists=True, desc="JSON: defacer -> its metrics (those that succeeded)")
    seen_dir = traits.Str(desc="folder of the defaced heads as measured (for the report)")


class MeasureResults(SimpleInterface):
    """Every successful defacer's metrics against the original's stage (one child process)."""

    input_spec = _MeasureResultsInputSpec
    output_spec = _MeasureResultsOutputSpec

    def _run_interface(self, runtime):
        cwd = Path(runtime.cwd)
        results = {name: folder for name, record, folder in
                   zip(self.inputs.defacers, self.inputs.records, self.inputs.result_dirs)
                   if record.get("status") == "ok"}
        spec = {"state": self.inputs.state, "results": results,
                "image_key": self.inputs.image_key, "seen_dir": str(cwd / "seen"),
                "out": str(cwd / "results.json")}
        _measure(cwd, "results", spec, self.inputs.threads)
        self._results["results_file"], self._results["seen_dir"] = spec["out"], spec["seen_dir"]
        return runtime


def _measure(cwd: Path, stage: str, spec: dict, threads: int) -> None:
    from bidsapp.io import atomic_write_json

    atomic_write_json(cwd / f"measure_{stage}.json", spec)
    _run_step([stage, str(cwd / f"measure_{stage}.json")], cwd, threads,
              module="bidsapp.metrics.measure")


class _ReportInputSpec(BaseInterfaceInputSpec):
    output_dir = traits.Str(mandatory=True)
    bids_dir = traits.Str(mandatory=True)
    subject = traits.Str(mandatory=True)
    show_faces = traits.Bool(False, usedefault=True)
    seen_dirs = traits.List(traits.Str, desc="the metrics steps' folders of measured heads")
    written = traits.List(desc="the participant's sinks' outputs (only to run after them)")


class _ReportOutputSpec(TraitedSpec):
    out_report = File(exists=True, desc="output_dir/sub-<label>.html")


class ParticipantReport(SimpleInterface):
    """The participant's HTML report, drawn once everything of the participant is written."""

    input_spec = _ReportInputSpec
    output_spec = _ReportOutputSpec

    def _run_interface(self, runtime):
        from nipype.interfaces.base import isdefined

        from bidsapp.reports.participant import write_participant_report

        seen = list(self.inputs.seen_dirs) if isdefined(self.inputs.seen_dirs) else []
        self._results["out_report"] = str(write_participant_report(
            Path(self.inputs.output_dir), self.inputs.subject, show_faces=self.inputs.show_faces,
            bids_dir=Path(self.inputs.bids_dir), seen_dirs=seen))
        return runtime


class _SinkInputSpec(BaseInterfaceInputSpec):
    output_dir = traits.Str(mandatory=True)
    bids_dir = traits.Str(mandatory=True)
    image = traits.Str(mandatory=True, desc="JSON of the AnatImage")
    defacer = traits.Str(desc="defacer name (defacer results)")
    result_dir = traits.Str(desc="the Deface node's result folder")
    record = traits.Dict(desc="record to write")
    brain_mask = traits.Str(desc="brain mask to write with the input record")


class _SinkOutputSpec(TraitedSpec):
    out_files = traits.List(traits.Str)


class _MeasurementsSinkInputSpec(BaseInterfaceInputSpec):
    output_dir = traits.Str(mandatory=True)
    image = traits.Str(mandatory=True, desc="JSON of the AnatImage")
    defacers = traits.List(traits.Str, mandatory=True)
    input_file = File(exists=True, mandatory=True, desc="the original's stage JSON")
    results_file = File(exists=True, mandatory=True, desc="the results' stage JSON")
    written = traits.List(desc="the image sinks' outputs (only to run after them)")


class MeasurementsSink(SimpleInterface):
    """Add one image's measurements to the records its sinks wrote (never gates them)."""

    input_spec = _MeasurementsSinkInputSpec
    output_spec = _SinkOutputSpec

    def _run_interface(self, runtime):
        from bidsapp import outputs
        from bidsapp.bids import AnatImage

        measured = {"input": json.loads(Path(self.inputs.input_file).read_text()),
                    "defacers": json.loads(Path(self.inputs.results_file).read_text())}
        written = outputs.write_measurements(Path(self.inputs.output_dir),
                                             AnatImage.from_json(self.inputs.image),
                                             list(self.inputs.defacers), measured)
        self._results["out_files"] = [str(p) for p in written]
        return runtime


class DerivativesSink(SimpleInterface):
    """Write results into the derivatives folder through :mod:`bidsapp.outputs`."""

    input_spec = _SinkInputSpec
    output_spec = _SinkOutputSpec

    def _run_interface(self, runtime):
        from bidsapp import outputs
        from bidsapp.bids import AnatImage

        image = AnatImage.from_json(self.inputs.image)
        output_dir, bids_dir = Path(self.inputs.output_dir), Path(self.inputs.bids_dir)
        if self.inputs.defacer:
            written = outputs.write_defacer_result(
                output_dir, bids_dir, image, self.inputs.defacer, Path(self.inputs.result_dir),
                dict(self.inputs.record))
        else:
            written = outputs.write_input_record(
                output_dir, bids_dir, image, dict(self.inputs.record),
                Path(self.inputs.brain_mask) if self.inputs.brain_mask else None)
        self._results["out_files"] = [str(p) for p in written]
        return runtime
