"""Report figures and the participant report, on synthetic heads and on the shared test data."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from records import affine as _affine
from records import make_results, synthetic_head

from bidsapp.reports import format_number, plots
from bidsapp.reports.participant import build_context, write_participant_report
from bidsapp.results import figure_path


def _psr(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same image stored in PSR voxel order (i: P, j: S, k: R)."""
    ras = nib.orientations.axcodes2ornt("RAS")
    psr = nib.orientations.axcodes2ornt("PSR")
    transform = nib.orientations.ornt_transform(ras, psr)
    moved = nib.orientations.apply_orientation(data, transform)
    new_affine = affine @ nib.orientations.inv_ornt_aff(transform, data.shape)
    return moved, new_affine


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """Synthetic head, brain and altered (face) masks saved RAS and PSR."""
    folder = tmp_path_factory.mktemp("head")
    data, brain, face = synthetic_head()
    defaced = np.where(face, 0, data).astype(np.float32)
    out = {}
    for name, orient in (("ras", None), ("psr", _psr)):
        arrays = []
        for array in (defaced, brain.astype(np.uint8), face.astype(np.uint8), data):
            if orient:
                moved, affine = orient(array, _affine())
            else:
                moved, affine = array, _affine()
            arrays.append(nib.Nifti1Image(np.ascontiguousarray(moved), affine))
        paths = [folder / f"{name}_{kind}.nii.gz" for kind in ("defaced", "brain", "altered",
                                                                "original")]
        for image, path in zip(arrays, paths):
            nib.save(image, path)
        out[name] = dict(zip(("defaced", "brain", "altered", "original"), paths))
    return out


def _pixels(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    return imread(str(path))


def test_mosaic_is_the_same_whatever_the_voxel_order(head, tmp_path):
    a = plots.plot_mosaic(head["ras"]["defaced"], head["ras"]["altered"], head["ras"]["brain"],
                          tmp_path / "ras.png")
    b = plots.plot_mosaic(head["psr"]["defaced"], head["psr"]["altered"], head["psr"]["brain"],
                          tmp_path / "psr.png")
    pa, pb = _pixels(a), _pixels(b)
    assert pa.shape == pb.shape and pa.shape[1] == 1000
    assert np.abs(pa - pb).max() < 1e-6
    red = (pa[..., 0] > 0.3) & (pa[..., 1] < 0.15) & (pa[..., 2] < 0.15)
    assert red.sum() > 500  # the altered voxels are drawn
    cyan = (pa[..., 0] < 0.2) & (pa[..., 1] > 0.7) & (pa[..., 2] > 0.7)
    assert cyan.sum() > 200  # the brain outline is drawn


def test_mosaic_marks_altered_brain_voxels_magenta(head, tmp_path):
    brain = np.asanyarray(nib.load(head["ras"]["brain"]).dataobj) > 0
    path = plots.plot_mosaic(head["ras"]["defaced"], brain, brain, tmp_path / "cut.png")
    pixels = _pixels(path)
    magenta = (pixels[..., 0] > 0.9) & (pixels[..., 1] < 0.1) & (pixels[..., 2] > 0.9)
    assert magenta.sum() > 1000


def test_mosaic_without_masks(head, tmp_path):
    path = plots.plot_mosaic(head["ras"]["defaced"], None, None, tmp_path / "plain.png")
    assert path.is_file()


def test_mosaic_cuts_are_centred_on_the_brain():
    data, brain, _ = synthetic_head()
    sagittal, axial = plots.mosaic_cuts(data, brain, np.array([4.0, 4.0, 4.0]))
    centre = np.argwhere(brain).mean(0)
    assert len(sagittal) == 5 and sagittal[2] == round(centre[0])
    assert sagittal[4] - sagittal[0] == 16  # +-32 mm at 4 mm
    assert len(axial) == 5 and axial == sorted(axial)
    assert axial[0] < np.argwhere(brain)[:, 2].min() < axial[-1]


def test_renders_face_the_camera_whatever_the_voxel_order(head, tmp_path):
    views = {}
    for name in ("ras", "psr"):
        mesh = plots.head_mesh(head[name]["original"], head[name]["brain"])
        views[name] = plots.render_views(mesh, camera_by_view=plots.brain_cameras(
            head[name]["brain"]))
    for view in plots.VIEWS:
        assert views["ras"][view].shape == (plots.RENDER_SIZE, plots.RENDER_SIZE)
        difference = np.abs(views["ras"][view].astype(int) - views["psr"][view].astype(int))
        assert difference.mean() < 2.0, view
    side = views["ras"]["side"] > 0
    rows, cols = np.nonzero(side)
    tip_row = rows[cols == cols.max()].mean()
    top, bottom = rows.min(), rows.max()
    assert tip_row > (top + bottom) / 2  # the nose points right, below the head's middle


def test_plot_renders_writes_three_views(head, tmp_path):
    mesh = plots.head_mesh(head["ras"]["defaced"], head["ras"]["brain"])
    path = plots.plot_renders(mesh, tmp_path / "r.png")
    pixels = _pixels(path)
    assert pixels.shape[:2] == (plots.RENDER_SIZE, 3 * plots.RENDER_SIZE + 8)


def test_plot_distributions_skips_missing_metrics(tmp_path):
    import pandas as pd

    table = pd.DataFrame({"defacer": ["a", "a", "b"], "x": [1.0, 2.0, 3.0],
                          "empty": [np.nan] * 3})
    payload = plots.plot_distributions(table, {"x": "x", "empty": "e", "absent": "z"},
                                       tmp_path / "d.png")
    assert payload.startswith(b"\x89PNG") and (tmp_path / "d.png").read_bytes() == payload
    assert plots.plot_distributions(table.iloc[:0], {"x": "x"}).startswith(b"\x89PNG")


@pytest.mark.parametrize("value, text", [(3, "3"), (2.0, "2"), (0.00012345, "0.000123"),
                                         (float("nan"), "n/a"), (np.bool_(False), "no"),
                                         ("ok", "ok"), (123456.7, "123457")])
def test_format_number(value, text):
    assert format_number(value) == text


# --- the participant report ---

@pytest.fixture()
def output(tmp_path):
    return make_results(tmp_path / "out", subjects=("01",),
                        defacers=("quickshear", "deepdefacer", "facemask"),
                        fail=[("01", "deepdefacer")], values={("01", "facemask"): (12, 0.95)})


def test_participant_report(output):
    path = write_participant_report(output, "sub-01")
    assert path == output / "sub-01.html"
    html = path.read_text()
    assert html.count('class="rating" data-image="sub-01_T1w"') == 2  # not for the failure
    assert html.count("data:image/png;base64,") == 4  # mosaic + render per success
    assert "deepdefacer crashed on sub-01_T1w" in html
    assert 'href="logs/sub-01/sub-01_T1w_desc-deepdefacer.log"' in html
    assert "12 brain voxel(s) altered" in html and "iqms.original_masks.delta.cnr" in html
    assert not re.search(r"""(src|href)=["'](https?:)?//""", html)
    figures = sorted(p.name for p in (output / "sub-01" / "figures").iterdir())
    assert figures == ["sub-01_mod-T1w_desc-facemask_mosaic.png",
                       "sub-01_mod-T1w_desc-facemask_render.png",
                       "sub-01_mod-T1w_desc-quickshear_mosaic.png",
                       "sub-01_mod-T1w_desc-quickshear_render.png"]
    meta = json.loads(re.search(r'id="bidsapp-meta">(.*?)</script>', html).group(1))
    assert meta["subject"] == "01" and len(meta["dataset"]) == 12


def test_participant_report_reuses_fresh_figures(output):
    write_participant_report(output, "01")
    figure = figure_path(output, "sub-01_T1w", "T1w", "quickshear", "mosaic")
    before = figure.stat().st_mtime_ns
    write_participant_report(output, "01")
    assert figure.stat().st_mtime_ns == before


def test_participant_report_escapes_record_text(output):
    record = output / "sub-01/anat/sub-01_desc-deepdefacer_T1w.json"
    data = json.loads(record.read_text())
    data["error"] = "<script>alert('x')</script>"
    record.write_text(json.dumps(data))
    html = write_participant_report(output, "01", figures=False).read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html


def test_original_face_only_with_the_opt_in(output, tmp_path):
    bids = tmp_path / "bids"
    (bids / "sub-01" / "anat").mkdir(parents=True)
    data, _, _ = synthetic_head()
    nib.save(nib.Nifti1Image(data, _affine()), bids / "sub-01/anat/sub-01_T1w.nii.gz")
    html = write_participant_report(output, "01", show_faces=True, bids_dir=bids).read_text()
    assert "Original (identifying)" in html
    original = figure_path(output, "sub-01_T1w", "T1w", "original", "render")
    assert original.is_file()
    html = write_participant_report(output, "01").read_text()
    assert "Original (identifying)" not in html and not original.exists()
    assert not list((output / "sub-01" / "figures").glob("*desc-original*"))


def test_participant_report_without_metrics_or_images(tmp_path):
    root = make_results(tmp_path, subjects=("01",), metrics=False)
    html = write_participant_report(root, "01").read_text()
    assert "metric(s) missing: brain voxels altered, face removed" in html
    assert "No IQM difference in these records" in html
    assert html.count('class="badge na"') >= 2


def test_participant_report_for_a_failed_input(tmp_path):
    root = make_results(tmp_path, subjects=("01",), failed_inputs=("01",))
    html = write_participant_report(root, "01").read_text()
    assert "every voxel is zero" in html


def test_participant_report_for_an_absent_participant(tmp_path):
    root = make_results(tmp_path, subjects=("01",))
    html = write_participant_report(root, "09").read_text()
    assert "No result was found for sub-09" in html


def test_participant_report_with_sessions(tmp_path):
    root = make_results(tmp_path, subjects=("01",), session="a")
    context = build_context(root, "01", figures=False)
    assert [i["key"] for i in context["images"]] == ["sub-01_ses-a_T1w"]
    cards = context["images"][0]["results"]
    assert [c["anchor"] for c in cards] == ["sub-01_ses-a_T1w--quickshear",
                                            "sub-01_ses-a_T1w--facemask"]
    assert cards[0]["log"] == "logs/sub-01/sub-01_ses-a_T1w_desc-quickshear.log"


def test_context_orders_t1w_before_its_carried_images(tmp_path):
    root = make_results(tmp_path, subjects=("01",), suffixes=("FLAIR", "T1w", "T2w"))
    context = build_context(root, "01", figures=False)
    assert [i["key"] for i in context["images"]] == ["sub-01_T1w", "sub-01_T2w", "sub-01_FLAIR"]


# --- real heads (shared test data) ---

@pytest.mark.slow
@pytest.mark.parametrize("relative", ["sub-ixi012/anat/sub-ixi012_T1w.nii.gz",
                                      "sub-hfp/anat/sub-hfp_acq-fl2d_T1w.nii.gz",
                                      "sub-adi/anat/sub-adi_acq-memprage_T1w.nii.gz"])
def test_real_heads_face_the_camera(ds_faces, relative, tmp_path):
    """PSR, prone and PIR heads: the detector finds a face in the front view, not the side."""
    from bidsapp.metrics.render import detect_face

    image = nib.load(ds_faces / relative)
    mesh = plots.head_mesh(image)
    views = plots.render_views(mesh)
    assert detect_face(views["front"]).found, relative
    assert not detect_face(views["side"]).found, relative
    plots.plot_renders(mesh, tmp_path / "r.png")
    data = np.asanyarray(image.dataobj)
    altered = np.zeros(data.shape, dtype=bool)
    altered[tuple(slice(0, n // 3) for n in data.shape)] = True
    assert plots.plot_mosaic(image, altered, None, tmp_path / "m.png").is_file()


# --- after the group level ---

def test_report_before_the_group_level_says_identification_not_run(output):
    context = build_context(output, "01", figures=False)
    card = context["images"][0]["results"][0]
    assert card["verdict_source"] == "participant" and not context["from_group"]
    assert card["identification"]["why"].startswith("not run: the group level has not run")
    assert card["detector"]["detected"] == "no" and card["detector"]["box_text"] == "none"
    html = write_participant_report(output, "01", figures=False).read_text()
    assert "Re-identification not run: the group level has not run" in html
    assert "re-identification attack has not run yet" in html


def test_report_shows_the_group_verdict_and_the_identification(tmp_path):
    from test_group import attacked, two_participants

    from bidsapp import group, results

    root = two_participants(tmp_path / "out")
    table = attacked(root, {("sub-01_T1w", "quickshear"): {"own": {"f": [1.05]}, "box": {}},
                            ("sub-02_T1w", "quickshear"): {"own": {"f": [2.0]}, "box": {}}})
    group.write_group_outputs(root, results.collect(root), identification=table)
    context = build_context(root, "01", figures=False)
    assert context["from_group"]
    t1w = context["images"][0]
    quickshear, facemask = t1w["results"]
    assert quickshear["verdict"] == "fail" and "re-identified" in quickshear["reason"]
    assert quickshear["verdict_source"] == "group"
    own, box = quickshear["identification"]["rows"]
    assert (own["rank"], own["distance"], own["same_scan"], own["reidentified"]) == \
        ("1 of 2", "0.050", "1.050", "yes")
    assert box["rank"].startswith("not ranked") and box["reidentified"] == "n/a"
    assert t1w["summary"][0]["verdict"] == "fail" and t1w["summary"][0]["reid"] == "yes"
    assert facemask["verdict"] == "pass" and t1w["summary"][1]["reid"] == "not run"
    assert facemask["identification"]["why"].startswith("not run at the group level")
    lonely = build_context(root, "02", figures=False)["images"][0]["results"][0]
    assert lonely["identification"]["rows"][0]["rank"] == "no other image of this participant"
    html = write_participant_report(root, "01", figures=False).read_text()
    assert "group level's verdicts" in html and "Re-identified: <strong>yes" in html
    # a participant rerun after the group level: its verdict is its own again, until the next
    record = root / "sub-01/anat/sub-01_desc-quickshear_T1w.json"
    stamp = (root / "group_T1w.tsv").stat().st_mtime + 5
    os.utime(record, (stamp, stamp))
    card = build_context(root, "01", figures=False)["images"][0]["results"][0]
    assert card["verdict"] == "pass" and card["stale"]
    assert card["identification"]["why"].startswith("not shown: the group level ran before")


def test_detected_face_is_drawn_on_the_defaced_render(tmp_path):
    """A record whose detector found a face: the report draws the box on the defaced render
    from the original's view (never the original)."""
    root = make_results(tmp_path / "out", subjects=("01",), defacers=("quickshear",))
    record = root / "sub-01/anat/sub-01_desc-quickshear_T1w.json"
    data = json.loads(record.read_text())
    data["metrics"].update(face_detected=True, face_view="y+0p+0", face_box=[40, 50, 120, 130],
                           face_score=0.8)
    record.write_text(json.dumps(data))
    html = write_participant_report(root, "01", bids_dir=tmp_path / "out-bids").read_text()
    figure = figure_path(root, "sub-01_T1w", "T1w", "quickshear", "detection")
    assert figure.is_file() and "What the detector saw" in html
    assert "left 40 top 50 right 120 bottom 130 (pixels)" in html and "view y+0p+0" in html
    pixels = _pixels(figure)
    assert pixels.shape[:2] == (2 * 176, 2 * 176)
    red = (pixels[..., 0] > 0.9) & (pixels[..., 1] < 0.3) & (pixels[..., 2] < 0.3)
    assert red[100, 80:240].all() and red[100:260, 80].all()  # the box, 2x enlarged
    assert (pixels[..., 0] > 0.1).sum() > 5000  # the defaced head is rendered
    assert not list((root / "sub-01" / "figures").glob("*desc-original*"))
