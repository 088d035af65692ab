"""The participant-level nipype workflow: brain mask once per image, every defacer, outputs.

For each anatomical image: a deepbet brain mask of the original (``brainmask_*``), pydeface's
template registered to it once for the template defacers (``template_*``), one measured
run per defacer (``deface_*``) and a sink for each result (``ds_*``); the metrics, the
original's stage (``measure_<image>``, beside the defacers) then the results'
(``measure_results_<image>``), are added to the written records afterwards (``ds_metrics_*``), so a
failed measurement never holds back a result; the participant's report (``report_<label>``)
once all of it is written. A T2w, FLAIR or other
non-T1w image of a session that has a T1w is defaced with that T1w's altered-voxel mask carried
over by a rigid registration (``coreg_*``, computed once and reused by every defacer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow

from bidsapp.bids import AnatImage
from bidsapp.settings import Settings
from bidsapp.workflows.steps import Step, tag
from bidsapp.workflows.interfaces import (
    BrainMask, Coregister, Deface, DerivativesSink, MeasureOriginal, MeasureResults,
    MeasurementsSink, ParticipantReport, TemplateRegistration,
)


def node_name(prefix: str, *parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", "_".join((prefix, *parts)))


@dataclass(frozen=True)
class ImagePlan:
    """How one image is defaced: directly, or with the mask of ``reference`` (a T1w)."""

    image: AnatImage
    reference: AnatImage | None = None

    @property
    def mode(self) -> str:
        return "direct" if self.reference is None else "carried-from-T1w"


def plan_images(images: list[AnatImage]) -> list[ImagePlan]:
    """T1w images are defaced directly; others take their session's first T1w when there is one."""
    t1w = {}
    for image in images:
        if image.suffix == "T1w":
            t1w.setdefault((image.subject, image.session), image)
    plans = []
    for image in images:
        reference = None if image.suffix == "T1w" else t1w.get((image.subject, image.session))
        plans.append(ImagePlan(image, reference))
    return plans


def init_participant_wf(*, settings: Settings, subject: str, images: list[AnatImage],
                        input_records: dict[str, dict], defacers: list[str],
                        name: str | None = None,
                        sources: dict[str, Path] | None = None) -> LiterateWorkflow:
    """Workflow that defaces every image of one participant with every defacer.

    ``input_records`` maps an image key to the record written beside its brain mask;
    ``sources`` an image key to the file its steps read, when not the image itself (the 3D
    copy of a single-volume 4D image, :func:`bidsapp.io.as_3d_copy`).
    """
    from bidsapp.boilerplate import describe_participant
    from bidsapp.defacers import get_defacer

    workflow = LiterateWorkflow(name=name or node_name("sub", subject, "wf"))
    common = {"output_dir": str(settings.output_dir), "bids_dir": str(settings.bids_dir)}
    threads = settings.omp_nthreads
    options = {"ears": settings.ears, "reface": settings.reface}
    masks, deface_nodes = {}, {}
    written, seen = [], []  # (node, output) the report waits for; the measured heads
    plans = plan_images(images)
    sources = sources or {}
    workflow.__desc__ = describe_participant(
        defacers, metrics=not settings.skip_metrics, carried=any(p.reference for p in plans),
        guarded=[d for d in defacers if settings.guard_for(get_defacer(d).guard_by_default)],
        margin_mm=settings.guard_margin_mm)

    def input_of(image: AnatImage) -> str:
        return str(sources.get(image.key, image.path))

    # direct images first, so a carried-over image can find its T1w's nodes
    for plan in sorted(plans, key=lambda p: p.reference is not None):
        image, key = plan.image, plan.image.key
        sink_original = pe.Node(DerivativesSink(image=image.to_json(), **common),
                                name=node_name("ds_original", key), overwrite=True)
        sink_original.inputs.record = {**input_records.get(key, {}), "mode": plan.mode,
                                       "reference_t1w": plan.reference.key if plan.reference else None}
        if plan.reference is None:
            mask_node = pe.Node(BrainMask(in_file=input_of(image), threads=threads),
                                name=node_name("brainmask", key), n_procs=threads, mem_gb=1.5)
            mask_field = "out_mask"
            coreg = None
        else:
            ref_node, ref_field = masks[plan.reference.key]
            coreg = pe.Node(Coregister(target=input_of(image), t1w=input_of(plan.reference),
                                       seed=settings.seed, threads=threads),
                            name=node_name("coreg", key), n_procs=threads, mem_gb=1.0)
            workflow.connect(ref_node, ref_field, coreg, "t1w_brain_mask")
            mask_node, mask_field = coreg, "out_mask"
        tag(mask_node, Step(key, f"{'brain mask' if coreg is None else 'coregistration'} {key}",
                            defacers=tuple(defacers)))
        masks[key] = (mask_node, mask_field)
        register = None
        if coreg is None and any(get_defacer(n).uses_template_registration for n in defacers):
            register = pe.Node(TemplateRegistration(in_file=input_of(image), seed=settings.seed),
                               name=node_name("template", key), mem_gb=1.0)
            tag(register, Step(key, f"template registration {key}", defacers=tuple(
                n for n in defacers if get_defacer(n).uses_template_registration)))
            workflow.connect(mask_node, mask_field, register, "brain_mask")
        workflow.connect(mask_node, mask_field, sink_original, "brain_mask")
        written.append((sink_original, "out_files"))
        measure = None
        if not settings.skip_metrics and defacers:
            # the original's stage needs only the brain mask: it runs beside the defacers
            measure = pe.Node(MeasureOriginal(in_file=input_of(image), seed=settings.seed,
                                              threads=threads),
                              name=node_name("measure", key), n_procs=threads, mem_gb=3.0)
            tag(measure, Step(key, f"metrics {key}"))
            results = pe.Node(MeasureResults(defacers=list(defacers), image_key=key,
                                             threads=threads),
                              name=node_name("measure_results", key), n_procs=threads,
                              mem_gb=3.0)
            tag(results, Step(key, f"metrics of the results of {key}"))
            merge_records = pe.Node(niu.Merge(len(defacers)), name=node_name("records", key),
                                    run_without_submitting=True)
            merge_dirs = pe.Node(niu.Merge(len(defacers)), name=node_name("results", key),
                                 run_without_submitting=True)
            sink_metrics = pe.Node(MeasurementsSink(image=image.to_json(),
                                                    output_dir=common["output_dir"],
                                                    defacers=list(defacers)),
                                   name=node_name("ds_metrics", key), overwrite=True)
            merge_sinks = pe.Node(niu.Merge(len(defacers) + 1), name=node_name("sinks", key),
                                  run_without_submitting=True)
            workflow.connect([(mask_node, measure, [(mask_field, "brain_mask")]),
                              (measure, results, [("state", "state")]),
                              (merge_records, results, [("out", "records")]),
                              (merge_dirs, results, [("out", "result_dirs")]),
                              (measure, sink_metrics, [("input_file", "input_file")]),
                              (results, sink_metrics, [("results_file", "results_file")]),
                              (sink_original, merge_sinks, [("out_files", "in1")]),
                              (merge_sinks, sink_metrics, [("out", "written")])])
            written.append((sink_metrics, "out_files"))
            seen.append((results, "seen_dir"))
        for index, name_ in enumerate(defacers, start=1):
            defacer = get_defacer(name_)
            deface = pe.Node(
                Deface(defacer=name_, in_file=input_of(image),
                       guard=settings.guard_for(defacer.guard_by_default),
                       guard_margin_mm=settings.guard_margin_mm, seed=settings.seed,
                       threads=threads, options=options),
                name=node_name("deface", name_, key), n_procs=threads,
                mem_gb=getattr(defacer, "mem_gb", 2.0))
            tag(deface, Step(key, f"{name_} on {key}", defacers=(name_,), record=True))
            workflow.connect(mask_node, mask_field, deface, "brain_mask")
            if register is not None and defacer.uses_template_registration:
                workflow.connect(register, "registration", deface, "registration")
            if coreg is not None:
                source = deface_nodes[(name_, plan.reference.key)]
                deface.inputs.source_image = input_of(plan.reference)
                workflow.connect([(coreg, deface, [("transform", "transform")]),
                                  (source, deface, [("record", "source_record"),
                                                    ("altered", "source_altered")])])
            deface_nodes[(name_, key)] = deface
            sink = pe.Node(DerivativesSink(image=image.to_json(), defacer=name_, **common),
                           name=node_name("ds", name_, key), overwrite=True)
            tag(sink, Step(key, defacers=(name_,)))
            workflow.connect([(deface, sink, [("record", "record"),
                                              ("result_dir", "result_dir")])])
            written.append((sink, "out_files"))
            if measure is not None:
                workflow.connect([(deface, merge_records, [("record", f"in{index}")]),
                                  (deface, merge_dirs, [("result_dir", f"in{index}")]),
                                  (sink, merge_sinks, [("out_files", f"in{index + 1}")])])
    _add_report(workflow, settings, subject, written, seen)
    return workflow


def _add_report(workflow, settings: Settings, subject: str, written: list, seen: list) -> None:
    """The participant's report, drawn once all its images are written, beside other steps."""
    report = pe.Node(ParticipantReport(output_dir=str(settings.output_dir),
                                       bids_dir=str(settings.bids_dir), subject=subject,
                                       show_faces=settings.show_faces),
                     name=node_name("report", subject), mem_gb=1.0, overwrite=True)
    tag(report, Step(f"sub-{subject}", f"report sub-{subject}", report=True))
    for field, sources in (("written", written), ("seen_dirs", seen)):
        if not sources:
            continue
        merge = pe.Node(niu.Merge(len(sources)), name=node_name(field, subject),
                        run_without_submitting=True)
        workflow.connect([(node, merge, [(output, f"in{i}")])
                          for i, (node, output) in enumerate(sources, start=1)])
        workflow.connect(merge, "out", report, field)
