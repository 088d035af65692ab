"""External defacers: exact command lines, output collection, availability, deface() end to end.

The real tools (FSL, FreeSurfer, AFNI, SPM) are not installed here. Fakes stand in for their
OUTPUT FILES and, in the end-to-end tests, for the executables themselves: they only test our
side of the boundary (staging, command, environment, log, collection).
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bidsapp.defacers import external as ext
from bidsapp.defacers.base import DefaceRequest
from bidsapp.defacers.external import grid, tool

TOOL_ENV = ("FSLDIR", "FREESURFER_HOME", "MRIDEFACER_DATA_DIR", "SPM_HOME", "MCR_HOME",
            "BIDSAPP_MRIDEFACE_DIR", "BIDSAPP_AFNI_DATA", "BIDSAPP_FSL_VERSION",
            "BIDSAPP_AFNI_VERSION", "BIDSAPP_SPM_VERSION", "BIDSAPP_MRIDEFACE_VERSION",
            "BIDSAPP_MRIDEFACER_VERSION")


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No tool on PATH and none of their variables: what a machine without the toolkits has."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    for var in TOOL_ENV:
        monkeypatch.delenv(var, raising=False)
    return empty


@pytest.fixture
def head(tmp_path):
    """A small int16 image in an oblique-free PSR-like storage order, read-only on disk."""
    rng = np.random.default_rng(0)
    data = rng.integers(1, 1000, size=(10, 12, 8)).astype(np.int16)
    affine = np.array([[0, 0, -2.0, 40], [-1.5, 0, 0, 60], [0, -1.2, 0, 30], [0, 0, 0, 1]])
    img = nib.Nifti1Image(data, affine)
    img.set_data_dtype(np.int16)
    img.set_qform(affine, 1)
    img.set_sform(affine, 1)
    folder = tmp_path / "bids" / "sub-01" / "anat"
    folder.mkdir(parents=True)
    path = folder / "sub-01_T1w.nii.gz"
    nib.save(img, path)
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    return path


def request_for(path: Path, work: Path, threads: int = 1) -> DefaceRequest:
    work.mkdir(parents=True, exist_ok=True)
    return DefaceRequest(image=nib.load(path), image_path=path, work_dir=work, threads=threads)


def to_las(img):
    """Orientation transform to FSL's radiological storage order (as fslreorient2std does)."""
    return nib.orientations.ornt_transform(nib.orientations.io_orientation(img.affine),
                                           nib.orientations.axcodes2ornt(("L", "A", "S")))


def touch_exe(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def fake_fsl(root: Path, programs) -> Path:
    for name in programs:
        touch_exe(root / "bin" / name)
    return root


# ------------------------------------------------------------------------------ command lines


def test_pydeface_command(head, tmp_path):
    req = request_for(head, tmp_path / "w")
    assert ext.PyDeface().command("input.nii.gz", req) == [
        "pydeface", "input.nii.gz", "--outfile", "defaced.nii.gz", "--force",
        "--cost", "mutualinfo"]


def test_fsl_deface_command(head, tmp_path):
    req = request_for(head, tmp_path / "w")
    assert ext.FslDeface().command("input.nii.gz", req) == [
        "fsl_deface", "input.nii.gz", "defaced.nii.gz"]


def test_mridefacer_command(head, tmp_path):
    req = request_for(head, tmp_path / "w")
    assert ext.MriDefacer().command("input.nii.gz", req) == [
        "mridefacer", "--no-color", "--outdir", "out", "input.nii.gz"]


def test_mri_deface_command_uses_both_atlases(head, tmp_path, monkeypatch, clean_env):
    folder = tmp_path / "mri_deface"
    exe = touch_exe(folder / "mri_deface")
    for name in ("talairach_mixed_with_skull.gca", "face.gca"):
        (folder / name).write_bytes(b"gca")
    monkeypatch.setenv("BIDSAPP_MRIDEFACE_DIR", str(folder))
    req = request_for(head, tmp_path / "w")
    tool = ext.MriDeface()
    assert tool.missing() == []
    assert tool.command("input.nii.gz", req) == [
        str(exe), "input.nii.gz", str(folder / "talairach_mixed_with_skull.gca"),
        str(folder / "face.gca"), "defaced.nii.gz"]


def test_mri_deface_atlases_from_freesurfer_home(tmp_path, monkeypatch, clean_env):
    average = tmp_path / "fs" / "average"
    average.mkdir(parents=True)
    (average / "face.gca").write_bytes(b"gca")
    monkeypatch.setenv("FREESURFER_HOME", str(tmp_path / "fs"))
    missing = ext.MriDeface().missing()
    assert missing[0] == "no mri_deface binary"
    assert missing[1] == (f"atlases not found in {average}: talairach_mixed_with_skull.gca")


@pytest.mark.parametrize("cls, mode", [(ext.AfniDeface, "-mode_deface"),
                                       (ext.AfniReface, "-mode_reface")])
def test_afni_commands(cls, mode, head, tmp_path):
    req = request_for(head, tmp_path / "w")
    assert cls().command("input.nii.gz", req) == [
        "@afni_refacer_run", "-input", "input.nii.gz", mode, "-prefix", "afni.nii.gz",
        "-no_images"]


def test_spm_command(head, tmp_path, monkeypatch, clean_env):
    spm = tmp_path / "spm12"
    touch_exe(spm / "run_spm12.sh")
    (tmp_path / "mcr" / "v97").mkdir(parents=True)
    monkeypatch.setenv("SPM_HOME", str(spm))
    monkeypatch.setenv("MCR_HOME", str(tmp_path / "mcr" / "v97"))
    req = request_for(head, tmp_path / "w")
    assert ext.SpmDeface().command("input.nii", req) == [
        str(spm / "run_spm12.sh"), str(tmp_path / "mcr" / "v97"), "function", "spm_deface",
        "input.nii"]


def test_environment_keeps_temporary_files_in_work_dir(head, tmp_path):
    req = request_for(head, tmp_path / "w", threads=3)
    env = ext.SpmDeface().environment(req)
    assert env["TMPDIR"] == str(req.work_dir)
    assert env["OMP_NUM_THREADS"] == "3"
    assert env["MCR_CACHE_ROOT"] == str(req.work_dir / "mcr_cache")
    assert ext.AfniDeface().environment(req)["AFNI_DONT_LOGFILE"] == "YES"


# ------------------------------------------------------------------------------ staging input


def test_stage_input_links_or_decompresses(head, tmp_path):
    req = request_for(head, tmp_path / "w")
    assert tool.stage_input(req) == "input.nii.gz"
    assert (req.work_dir / "input.nii.gz").resolve() == head.resolve()
    assert tool.stage_input(req, uncompressed=True) == "input.nii"
    plain = nib.load(req.work_dir / "input.nii")
    assert np.array_equal(np.asanyarray(plain.dataobj), np.asanyarray(nib.load(head).dataobj))
    assert tool.stage_input(req) == "input.nii.gz"  # staging twice replaces the old link


# --------------------------------------------------------------------------- output collection


def test_collect_same_grid_is_exact(head, tmp_path):
    ref = nib.load(head)
    data = np.asanyarray(ref.dataobj).copy()
    data[:, :, :3] = 0
    out = tmp_path / "out.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.float32), ref.affine), out)
    collected = grid.collect_on_input_grid(out, ref)
    assert collected.dtype == np.int16
    assert np.array_equal(collected, data)


def test_collect_spm_nan_outside_head(head, tmp_path):
    """spm_deface writes NaN (float input) where it removed the face."""
    ref = nib.load(head)
    data = np.asanyarray(ref.dataobj).astype(np.float32)
    data[:4] = np.nan
    out = tmp_path / "anon_input.nii"
    nib.save(nib.Nifti1Image(data, ref.affine), out)
    collected, notes = grid.collect_with_notes(out, ref)
    assert collected.dtype == np.int16 and not collected[:4].any()
    assert np.array_equal(collected[4:], np.asanyarray(ref.dataobj)[4:])
    assert any("NaN" in note and str(4 * 12 * 8) in note for note in notes)


def test_collect_reoriented_output_is_permuted_back_exactly(head, tmp_path):
    """mridefacer/fslreorient2std write the same voxels in another storage order."""
    ref = nib.load(head)
    las = ref.as_reoriented(to_las(ref))
    assert las.shape != ref.shape  # really another voxel order
    out = tmp_path / "reoriented.nii.gz"
    nib.save(las, out)
    collected, notes = grid.collect_with_notes(out, ref)
    assert np.array_equal(collected, np.asanyarray(ref.dataobj))
    assert "permuted back" in notes[0]


def test_collect_other_grid_nearest_neighbour(head, tmp_path):
    ref = nib.load(head)
    data = np.asanyarray(ref.dataobj)
    # the same image at twice the resolution (each voxel split in 2x2x2)
    fine = np.repeat(np.repeat(np.repeat(data, 2, 0), 2, 1), 2, 2)
    affine = ref.affine.copy()
    affine[:3, :3] /= 2
    affine[:3, 3] -= ref.affine[:3, :3] @ np.full(3, 0.25)
    out = tmp_path / "fine.nii.gz"
    nib.save(nib.Nifti1Image(fine, affine), out)
    collected, notes = grid.collect_with_notes(out, ref)
    assert np.array_equal(collected, data)
    assert "nearest neighbour" in notes[0]


def test_collect_clips_to_input_dtype(head, tmp_path):
    """AFNI writes float results; values beyond int16 are clipped, fractions rounded."""
    ref = nib.load(head)
    data = np.full(ref.shape, 70000.0, dtype=np.float32)
    data[0, 0, 0] = -1e6
    data[1, 0, 0] = 2.6
    out = tmp_path / "afni.nii.gz"
    nib.save(nib.Nifti1Image(data, ref.affine), out)
    collected = grid.collect_on_input_grid(out, ref)
    assert collected.dtype == np.int16
    assert collected[0, 0, 0] == -32768 and collected[1, 0, 0] == 3 and collected.max() == 32767


def test_collect_missing_output_is_an_error(head, tmp_path):
    with pytest.raises(RuntimeError, match="did not write"):
        grid.collect_on_input_grid(tmp_path / "nothing.nii.gz", nib.load(head))


def test_afni_collects_main_output_among_prefix_files(head, tmp_path):
    ref = nib.load(head)
    req = request_for(head, tmp_path / "w")
    data = np.asanyarray(ref.dataobj).astype(np.float32)
    data[:, :2] = 0
    nib.save(nib.Nifti1Image(data, ref.affine), req.work_dir / "afni.nii.gz")
    face = np.zeros(ref.shape, np.float32)
    face[:, :2] = 1
    nib.save(nib.Nifti1Image(face, ref.affine), req.work_dir / "afni.face.nii.gz")
    (req.work_dir / "afni_QC").mkdir()
    collected, _ = ext.AfniDeface().collect(req)
    assert np.array_equal(collected, data.astype(np.int16))


def test_mridefacer_applies_reoriented_keep_mask(head, tmp_path):
    ref = nib.load(head)
    req = request_for(head, tmp_path / "w")
    keep = np.ones(ref.shape, np.uint8)
    keep[:, :, :2] = 0
    mask = nib.Nifti1Image(keep, ref.affine)
    std = mask.as_reoriented(to_las(ref))
    (req.work_dir / "out").mkdir()
    nib.save(std, req.work_dir / "out" / "input_defacemask.nii.gz")
    collected, notes = ext.MriDefacer().collect(req)
    expected = np.asanyarray(ref.dataobj).copy()
    expected[:, :, :2] = 0
    assert collected.dtype == np.int16 and np.array_equal(collected, expected)
    assert any("permuted back" in note for note in notes)


# -------------------------------------------------------------------------------- availability


@pytest.mark.parametrize("cls", ext.EXTERNAL_DEFACERS, ids=lambda c: c.name)
def test_unavailable_with_a_reason(cls, clean_env):
    found = cls().availability()
    assert not found.available
    assert tool.CONTAINER_HINT in found.reason
    assert cls.title in found.reason


def test_reasons_name_what_is_missing(clean_env):
    assert ext.PyDeface().availability().reason == (
        "pydeface: not on PATH: pydeface, fsl, flirt; FSLDIR is not set to an FSL installation; "
        + tool.CONTAINER_HINT)
    assert "FSLDIR" in ext.FslDeface().availability().reason
    assert "no mri_deface binary" in ext.MriDeface().availability().reason
    assert "BIDSAPP_MRIDEFACE_DIR" in ext.MriDeface().availability().reason
    # the main program only, not the dozen AFNI helpers it calls
    assert "not on PATH: @afni_refacer_run, tcsh;" in ext.AfniReface().availability().reason
    reason = ext.SpmDeface().availability().reason
    assert "run_spm12.sh" in reason and "MCR_HOME" in reason


def test_available_with_everything_in_place(tmp_path, monkeypatch, clean_env):
    bin_dir = clean_env
    for name in ext.AfniDeface.executables:
        touch_exe(bin_dir / name, "#!/bin/sh\necho 2.4\n")
    assert "not on PATH: 3dUnifize, 3dAllineate" in ext.AfniDeface().availability().reason
    for name in ext.AfniDeface.helpers:
        touch_exe(bin_dir / name)
    for name in ext.AfniDeface.datasets:
        (bin_dir / name).write_bytes(b"")
    monkeypatch.setenv("BIDSAPP_AFNI_VERSION", "AFNI_25.0.00")
    found = ext.AfniDeface().availability()
    assert found.available, found.reason
    assert found.version == "refacer 2.4 (AFNI AFNI_25.0.00)"
    (bin_dir / ext.AfniDeface.datasets[1]).unlink()
    assert "afni_refacer_shell_sym_1.0.nii.gz" in ext.AfniDeface().availability().reason


def test_mridefacer_needs_fsl_and_templates(tmp_path, monkeypatch, clean_env):
    for name in ext.MriDefacer.executables:
        touch_exe(clean_env / name)
    monkeypatch.setenv("FSLDIR", str(fake_fsl(tmp_path / "fsl", ext.MriDefacer.fsl_programs)))
    monkeypatch.setenv("MRIDEFACER_DATA_DIR", str(tmp_path / "data"))
    assert "head_tmpl_brain.nii.gz" in ext.MriDefacer().availability().reason
    (tmp_path / "data").mkdir()
    for name in ext.MriDefacer.templates:
        (tmp_path / "data" / name).write_bytes(b"")
    monkeypatch.setenv("BIDSAPP_MRIDEFACER_VERSION", "0.1+gabc")
    monkeypatch.setenv("BIDSAPP_FSL_VERSION", "6.0.7.22")
    found = ext.MriDefacer().availability()
    assert found.available and found.version == "0.1+gabc (FSL 6.0.7.22)"


def test_registry_points_at_these_classes():
    from bidsapp.defacers import REGISTRY

    for cls in ext.EXTERNAL_DEFACERS:
        assert REGISTRY[cls.name] == f"bidsapp.defacers.external:{cls.__name__}"
        assert cls.name.isalnum() and cls.kind == "external"


def test_main_reports_and_requires(clean_env, capsys):
    assert ext.main([]) == 0
    out = capsys.readouterr().out
    assert all(cls.name in out for cls in ext.EXTERNAL_DEFACERS)
    assert ext.main(["--require", "spmdeface"]) == 1
    assert "spmdeface" in capsys.readouterr().err


# ---------------------------------------------------- deface() end to end with fake executables

FAKE_HEADER = f"#!{sys.executable}\nimport sys, numpy as np, nibabel as nib\n"


def test_pydeface_end_to_end_with_fake_executable(head, tmp_path, monkeypatch, clean_env):
    touch_exe(clean_env / "pydeface", FAKE_HEADER + (
        "args = sys.argv[1:]\n"
        "img = nib.load(args[0]); data = np.asanyarray(img.dataobj).astype(float)\n"
        "data[:, :, :3] *= 0.0\n"
        "print('fake pydeface', ' '.join(args))\n"
        "out = args[args.index('--outfile') + 1]\n"
        "nib.save(nib.Nifti1Image(data, img.affine, img.header), out)\n"
    ))
    touch_exe(clean_env / "fsl")
    touch_exe(clean_env / "flirt")
    monkeypatch.setenv("FSLDIR", str(fake_fsl(tmp_path / "fsl", ["flirt"])))
    before = head.read_bytes()
    req = request_for(head, tmp_path / "w")
    result = ext.PyDeface().deface(req)
    expected = np.asanyarray(nib.load(head).dataobj).copy()
    expected[:, :, :3] = 0
    assert result.data.dtype == np.int16 and np.array_equal(result.data, expected)
    assert result.command == ["pydeface", "input.nii.gz", "--outfile", "defaced.nii.gz",
                              "--force", "--cost", "mutualinfo"]
    log = (req.work_dir / tool.LOG_NAME).read_text()
    assert "$ pydeface input.nii.gz" in log and "fake pydeface" in log
    assert head.read_bytes() == before  # the input is never written


def test_spm_end_to_end_nan_output(head, tmp_path, monkeypatch, clean_env):
    spm = tmp_path / "spm12"
    touch_exe(spm / "run_spm12.sh", FAKE_HEADER + (
        "import os\n"
        "mcr, action, fn, name = sys.argv[1:]\n"
        "assert action == 'function' and fn == 'spm_deface' and name.endswith('.nii')\n"
        "assert os.environ['MCR_CACHE_ROOT'].startswith(os.getcwd())\n"
        "img = nib.load(name); data = np.asanyarray(img.dataobj).astype(np.float32)\n"
        "data[:3] = np.nan\n"
        "nib.save(nib.Nifti1Image(data, img.affine), 'anon_' + name)\n"
    ))
    (tmp_path / "mcr").mkdir()
    monkeypatch.setenv("SPM_HOME", str(spm))
    monkeypatch.setenv("MCR_HOME", str(tmp_path / "mcr"))
    req = request_for(head, tmp_path / "w")
    result = ext.SpmDeface().deface(req)
    assert not result.data[:3].any()
    assert np.array_equal(result.data[3:], np.asanyarray(nib.load(head).dataobj)[3:])
    assert any("NaN" in note for note in result.notes)


def test_afni_end_to_end_finds_staged_datasets(head, tmp_path, monkeypatch, clean_env):
    for name in ext.AfniDeface.executables + ext.AfniDeface.helpers:
        touch_exe(clean_env / name)
    for name in ext.AfniDeface.datasets:
        (clean_env / name).write_bytes(b"dataset")
    touch_exe(clean_env / "@afni_refacer_run", FAKE_HEADER + (
        "import os\n"
        "args = sys.argv[1:]\n"
        "assert os.path.isfile('MNI152_2009_template_SSW.nii.gz')\n"
        "assert os.environ['AFNI_DONT_LOGFILE'] == 'YES'\n"
        "img = nib.load(args[args.index('-input') + 1])\n"
        "data = np.asanyarray(img.dataobj).astype(np.float32) * 1.5\n"
        "prefix = args[args.index('-prefix') + 1]\n"
        "nib.save(nib.Nifti1Image(data, img.affine), prefix)\n"
        "nib.save(nib.Nifti1Image((data > 0).astype(np.uint8), img.affine),\n"
        "         prefix.replace('.nii.gz', '.face.nii.gz'))\n"
    ))
    req = request_for(head, tmp_path / "w")
    result = ext.AfniReface().deface(req)
    expected = np.rint(np.asanyarray(nib.load(head).dataobj) * 1.5).astype(np.int16)
    assert np.array_equal(result.data, expected)
    assert result.command[3] == "-mode_reface"
    assert result.parameters["mode"] == "reface"


def test_failure_raises_with_log_tail(head, tmp_path, monkeypatch, clean_env):
    touch_exe(clean_env / "fsl_deface", "#!/bin/sh\necho 'bet: image not found' >&2\nexit 3\n")
    programs = ext.FslDeface.fsl_programs
    fsl = fake_fsl(tmp_path / "fsl", programs)
    (fsl / "data" / "standard").mkdir(parents=True)
    for name in ext.FslDeface.fsl_data:
        (fsl / "data" / "standard" / name).write_bytes(b"")
    monkeypatch.setenv("FSLDIR", str(fsl))
    req = request_for(head, tmp_path / "w")
    with pytest.raises(RuntimeError, match=r"exited with code 3(.|\n)*bet: image not found"):
        ext.FslDeface().deface(req)


def test_deface_refuses_when_unavailable(head, tmp_path, clean_env):
    with pytest.raises(RuntimeError, match="cannot run here"):
        ext.MriDeface().deface(request_for(head, tmp_path / "w"))
    assert not os.listdir(tmp_path / "w")  # nothing was staged
