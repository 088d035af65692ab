"""Workflow graphs (built, not run) and the measured runner on a real image."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bidsapp.bids import find_anatomical_images, load_layout
from bidsapp.settings import Settings
from bidsapp.workflows.participant import init_participant_wf, plan_images


def _settings(ds, tmp_path, **kw) -> Settings:
    return Settings(bids_dir=ds, output_dir=tmp_path / "out", analysis_level="participant",
                    work_dir=tmp_path / "work", defacers=("quickshear", "facemask"), **kw)


def test_plan_uses_session_t1w_for_other_contrasts(ds_faces):
    plans = {p.image.key: p for p in plan_images(find_anatomical_images(load_layout(ds_faces)))}
    assert plans["sub-uber_FLAIR"].reference.key == "sub-uber_acq-se_T1w"
    assert plans["sub-adi_acq-fse_T2w"].reference.key == "sub-adi_acq-memprage_T1w"
    assert plans["sub-hfp_acq-fl2d_T1w"].mode == "direct"


def test_plan_without_t1w_defaces_directly(ds_faces):
    images = find_anatomical_images(load_layout(ds_faces), subjects=["uber"],
                                    suffixes=["FLAIR"])
    assert plan_images(images)[0].mode == "direct"


def test_participant_graph(ds_faces, tmp_path):
    settings = _settings(ds_faces, tmp_path)
    images = find_anatomical_images(load_layout(ds_faces), subjects=["uber"])
    wf = init_participant_wf(settings=settings, subject="uber", images=images,
                             input_records={}, defacers=list(settings.defacers))
    names = {node.name for node in wf._graph.nodes()}
    assert "brainmask_sub_uber_acq_se_T1w" in names
    assert "coreg_sub_uber_FLAIR" in names
    assert "brainmask_sub_uber_FLAIR" not in names  # one brain mask per T1w, carried over
    for defacer in settings.defacers:
        assert f"deface_{defacer}_sub_uber_FLAIR" in names
        assert f"ds_{defacer}_sub_uber_acq_se_T1w" in names
    flair = wf.get_node("deface_quickshear_sub_uber_FLAIR")
    sources = {u.name for u, v in wf._graph.in_edges(flair)}
    assert sources == {"coreg_sub_uber_FLAIR", "deface_quickshear_sub_uber_acq_se_T1w"}
    # the guard follows each defacer's default under --brain-guard auto
    assert wf.get_node("deface_facemask_sub_uber_acq_se_T1w").inputs.guard is True
    assert wf.get_node("deface_quickshear_sub_uber_acq_se_T1w").inputs.guard is False


def test_template_registration_is_one_node_shared(ds_faces, tmp_path):
    """facecut and facemask take pydeface's template registration from one node per T1w."""
    settings = _settings(ds_faces, tmp_path)
    images = find_anatomical_images(load_layout(ds_faces), subjects=["uber"])
    wf = init_participant_wf(settings=settings, subject="uber", images=images, input_records={},
                             defacers=["facecut", "facemask", "quickshear"])
    names = {node.name for node in wf._graph.nodes()}
    assert [n for n in names if n.startswith("template_")] == ["template_sub_uber_acq_se_T1w"]
    register = wf.get_node("template_sub_uber_acq_se_T1w")
    fed = {v.name for u, v in wf._graph.out_edges(register)}
    assert fed == {"deface_facecut_sub_uber_acq_se_T1w", "deface_facemask_sub_uber_acq_se_T1w"}
    quickshear_only = init_participant_wf(settings=settings, subject="uber", images=images,
                                          input_records={}, defacers=["quickshear"])
    assert not [n for n in quickshear_only._graph.nodes() if n.name.startswith("template_")]


def test_sinks_do_not_wait_for_the_metrics(ds_faces, tmp_path):
    """A crashed Measure node used to hold back every sink of its image (defaced images and
    the input record); now only ``ds_metrics_*`` follows it, after the image sinks."""
    import networkx as nx

    settings = _settings(ds_faces, tmp_path)
    images = find_anatomical_images(load_layout(ds_faces), subjects=["uber"])
    wf = init_participant_wf(settings=settings, subject="uber", images=images,
                             input_records={}, defacers=list(settings.defacers))
    graph = wf._graph
    sinks = [n for n in graph.nodes() if n.name.startswith("ds_")
             and not n.name.startswith("ds_metrics_")]
    assert len(sinks) == 2 * (1 + len(settings.defacers))
    for sink in sinks:
        ancestors = {n.name for n in nx.ancestors(graph, sink)}
        assert not [n for n in ancestors if n.startswith("measure_")], sink.name
    for image in images:
        metrics_sink = wf.get_node(f"ds_metrics_{image.key.replace('-', '_')}")
        ancestors = {n.name for n in nx.ancestors(graph, metrics_sink)}
        key = image.key.replace("-", "_")
        assert f"measure_{key}" in ancestors
        assert {f"ds_{d}_{key}" for d in settings.defacers} | {f"ds_original_{key}"} <= ancestors


def test_single_volume_4d_steps_read_a_3d_copy(ds_faces, tmp_path):
    """x*y*z*1 images crashed the brain mask step; every step now reads a 3D copy."""
    from edgecases import write_case

    from bidsapp.bids import AnatImage
    from bidsapp.io import as_3d_copy, like_input

    head = ds_faces / "sub-xa30" / "anat" / "sub-xa30_run-1_T1w.nii.gz"
    path = write_case("fourd1", tmp_path / "sub-x_T1w.nii.gz", head)
    copy = as_3d_copy(path, tmp_path / "copies")
    assert nib.load(copy).shape == nib.load(head).shape and as_3d_copy(head, tmp_path) == head
    assert np.array_equal(np.asanyarray(nib.load(copy).dataobj),
                          np.asanyarray(nib.load(head).dataobj))
    mtime = copy.stat().st_mtime_ns
    assert as_3d_copy(path, tmp_path / "copies") == copy and copy.stat().st_mtime_ns == mtime
    image = AnatImage(path, (("sub", "x"),), "T1w")
    wf = init_participant_wf(settings=_settings(ds_faces, tmp_path), subject="x", images=[image],
                             input_records={}, defacers=["quickshear"],
                             sources={image.key: copy})
    assert wf.get_node("brainmask_sub_x_T1w").inputs.in_file == str(copy)
    assert wf.get_node("deface_quickshear_sub_x_T1w").inputs.in_file == str(copy)
    like_input(copy, path, tmp_path / "out.nii.gz")  # the result gets the input's shape back
    assert nib.load(tmp_path / "out.nii.gz").shape == nib.load(path).shape


def test_guard_forced_on(ds_faces, tmp_path):
    settings = _settings(ds_faces, tmp_path, brain_guard="on")
    images = find_anatomical_images(load_layout(ds_faces), subjects=["hfs"])
    wf = init_participant_wf(settings=settings, subject="hfs", images=images, input_records={},
                             defacers=["quickshear"])
    assert wf.get_node("deface_quickshear_sub_hfs_acq_fl2d_T1w").inputs.guard is True


@pytest.mark.slow
def test_runner_measures_and_only_alters_masked_voxels(ds_faces, tmp_path):
    """quickshear for real on the prone image, in a measured child process."""
    from bidsapp.anatomy.brainmask import deepbet_brain_mask
    from bidsapp.defacers.runner import make_spec, run_measured
    from bidsapp.io import save_like

    path = ds_faces / "sub-hfp" / "anat" / "sub-hfp_acq-fl2d_T1w.nii.gz"
    image = nib.load(path)
    brain = deepbet_brain_mask(image)
    save_like(image, brain.astype(np.uint8), tmp_path / "brain.nii.gz", dtype=np.uint8)
    spec = make_spec(defacer="quickshear", image=path, out_dir=tmp_path / "run",
                     brain_mask=tmp_path / "brain.nii.gz", guard=True, guard_margin_mm=5,
                     seed=1, threads=1)
    record = run_measured(spec)
    assert record["status"] == "ok", record
    assert record["wall_time_s"] > 0 and 20 < record["peak_rss_mb"] < 4000
    assert record["guard"]["applied"] and record["version"]
    defaced = nib.load(tmp_path / "run" / "defaced.nii.gz")
    altered = np.asanyarray(nib.load(tmp_path / "run" / "altered.nii.gz").dataobj).astype(bool)
    original = np.asanyarray(image.dataobj)
    result = np.asanyarray(defaced.dataobj)
    assert defaced.shape == image.shape and np.array_equal(defaced.affine, image.affine)
    assert defaced.get_data_dtype() == image.get_data_dtype()
    assert altered.any() and record["altered_voxels"] == altered.sum()
    assert np.array_equal(result[~altered], original[~altered])
    assert not (altered & brain).any()
    assert json.loads((tmp_path / "run" / "record.json").read_text())["peak_rss_mb"] > 0


def test_runner_failure_is_a_record(tmp_path, ds_faces):
    """A defacer that cannot run yields status failed with the reason; nothing is raised."""
    from bidsapp.defacers.runner import make_spec, run_measured

    path = ds_faces / "sub-xa30" / "anat" / "sub-xa30_run-1_T1w.nii.gz"
    spec = make_spec(defacer="quickshear", image=path, out_dir=tmp_path / "run", brain_mask=None,
                     guard=False, guard_margin_mm=5, seed=1, threads=1)
    record = run_measured(spec)
    assert record["status"] == "failed" and "brain mask" in record["error"]
    assert not (Path(tmp_path) / "run" / "defaced.nii.gz").exists()


def test_the_report_is_a_node_after_everything_of_its_participant(ds_faces, tmp_path):
    """One report node per participant: it waits for every sink (defaced images, input records,
    measurements) and takes the heads each metrics step measured; nothing else waits for it."""
    import networkx as nx

    settings = _settings(ds_faces, tmp_path)
    images = find_anatomical_images(load_layout(ds_faces), subjects=["uber"])
    wf = init_participant_wf(settings=settings, subject="uber", images=images,
                             input_records={}, defacers=list(settings.defacers))
    graph = wf._graph
    reports = [n for n in graph.nodes() if n.name.startswith("report_")]
    assert [n.name for n in reports] == ["report_uber"]
    report = reports[0]
    assert report.bidsapp_step.report and report.bidsapp_step.image == "sub-uber"
    ancestors = {n.name for n in nx.ancestors(graph, report)}
    sinks = {n.name for n in graph.nodes() if n.name.startswith("ds_")}
    assert len(sinks) == 2 * (2 + len(settings.defacers)) and sinks <= ancestors
    assert {f"measure_{i.key.replace('-', '_')}" for i in images} <= ancestors
    assert not list(graph.successors(report))
    merged = wf.get_node("seen_dirs_uber")
    assert {u.name for u, _ in graph.in_edges(merged)} == {
        f"measure_results_{i.key.replace('-', '_')}" for i in images}


def test_the_originals_metrics_run_beside_the_defacers(ds_faces, tmp_path):
    """The original's metrics stage needs only the brain mask, so it runs beside the defacers;
    the results' stage waits for it and for every defacer of the image."""
    import networkx as nx

    settings = _settings(ds_faces, tmp_path)
    images = find_anatomical_images(load_layout(ds_faces), subjects=["uber"])
    wf = init_participant_wf(settings=settings, subject="uber", images=images,
                             input_records={}, defacers=list(settings.defacers))
    graph = wf._graph
    for image in images:
        key = image.key.replace("-", "_")
        original = wf.get_node(f"measure_{key}")
        assert not [n for n in nx.ancestors(graph, original) if n.name.startswith("deface_")]
        results = {n.name for n in nx.ancestors(graph, wf.get_node(f"measure_results_{key}"))}
        assert {f"measure_{key}"} | {f"deface_{d}_{key}" for d in settings.defacers} <= results
        sink = {n.name for n in nx.ancestors(graph, wf.get_node(f"ds_metrics_{key}"))}
        assert {f"measure_{key}", f"measure_results_{key}"} <= sink
