"""The command line: BIDS Apps arguments, usage errors (exit 2, one line), --help, --version."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bidsapp.cli.parser import build_parser, parse_args
from bidsapp.cli.main import main


def _usage_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_parser_is_pure_and_lists_bids_app_arguments():
    parser = build_parser()
    options = {o for action in parser._actions for o in action.option_strings}
    for flag in ("--participant-label", "--session-label", "--modalities", "--defacers",
                 "-w", "--work-dir", "--nprocs", "--omp-nthreads", "--mem-gb", "-v", "-q",
                 "--version"):
        assert flag in options


def test_labels_normalised_with_or_without_prefix(ds_faces, tmp_path):
    settings = parse_args([str(ds_faces), str(tmp_path / "out"), "participant",
                           "--participant-label", "sub-uber", "adi", "uber",
                           "--session-label", "ses-1", "--defacers", "quickshear"])
    assert settings.participant_labels == ("adi", "uber")
    assert settings.session_labels == ("1",)
    assert settings.work_dir == tmp_path / "bidsapp_work"
    assert settings.defacers == ("quickshear",)


def test_default_defacers_are_the_available_ones(ds_faces, tmp_path):
    from bidsapp.defacers import available_defacers

    settings = parse_args([str(ds_faces), str(tmp_path / "out"), "participant"])
    assert settings.defacers == tuple(available_defacers())
    assert "quickshear" in settings.defacers


def test_output_dir_inside_bids_dir(capsys, ds_faces):
    err = _usage_error(capsys, [str(ds_faces), str(ds_faces / "derivatives" / "x"),
                                "participant"])
    assert "inside" in err and "outside" in err


def test_output_dir_equal_to_bids_dir(capsys, ds_faces):
    err = _usage_error(capsys, [str(ds_faces), str(ds_faces), "participant"])
    assert "bids_dir" in err


def test_work_dir_inside_bids_dir(capsys, ds_faces, tmp_path):
    err = _usage_error(capsys, [str(ds_faces), str(tmp_path / "o"), "participant",
                                "-w", str(ds_faces / "work")])
    assert "work dir" in err and "--work-dir" in err


def test_unknown_defacer(capsys, ds_faces, tmp_path):
    err = _usage_error(capsys, [str(ds_faces), str(tmp_path / "o"), "participant",
                                "--defacers", "nosuchtool"])
    assert "nosuchtool" in err and "quickshear" in err


def test_unavailable_defacer_says_why(capsys, ds_faces, tmp_path):
    from bidsapp.defacers import REGISTRY, availability

    missing = [name for name in REGISTRY if not availability(name).available]
    if not missing:
        pytest.skip("every defacer is available on this machine")
    err = _usage_error(capsys, [str(ds_faces), str(tmp_path / "o"), "participant",
                                "--defacers", missing[0]])
    assert "not available here" in err and availability(missing[0]).reason[:30] in err


def test_path_characters_in_label(capsys, ds_faces, tmp_path):
    err = _usage_error(capsys, [str(ds_faces), str(tmp_path / "o"), "participant",
                                "--participant-label", "../x"])
    assert "../x" in err


def test_missing_bids_dir(capsys, tmp_path):
    err = _usage_error(capsys, [str(tmp_path / "nothere"), str(tmp_path / "o"), "participant"])
    assert "does not exist" in err


def test_unknown_participant_exit_2_and_nothing_written(capsys, ds_faces, tmp_path):
    code = main([str(ds_faces), str(tmp_path / "o"), "participant", "--participant-label",
                 "nobody", "--defacers", "quickshear"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "nobody" in err and "available:" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_no_anatomical_image_matched(capsys, ds_faces, tmp_path):
    code = main([str(ds_faces), str(tmp_path / "o"), "participant", "--participant-label",
                 "uber", "--modalities", "T2starw", "--defacers", "quickshear"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "no anatomical image" in err and "T2starw" in err and "--modalities" in err


def test_help_lists_each_defacer_with_availability():
    from bidsapp.defacers import REGISTRY

    out = subprocess.run([sys.executable, "-m", "bidsapp", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for name in REGISTRY:
        assert f"  {name} " in out
    assert "available, " in out and "unavailable: " in out


def test_version():
    out = subprocess.run([sys.executable, "-m", "bidsapp", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith("bidsapp ")


def test_crash_reason_is_the_exception_line():
    from bidsapp.cli.progress import crash_reason

    traceback = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
                 "    os.replace(a, b)\n"
                 "OSError: [Errno 28] No space left on device: '/out/x.nii.gz'\n")
    reason = crash_reason(traceback)
    assert reason == ("the step crashed: OSError: [Errno 28] No space left on device: "
                      "'/out/x.nii.gz'")
    assert crash_reason(None) == "the step crashed"


def test_a_crash_is_attributed_from_the_step_its_node_carries():
    from types import SimpleNamespace

    from bidsapp.cli.progress import Crashed
    from bidsapp.workflows.steps import Step

    node = SimpleNamespace(name="anything", bidsapp_step=Step("sub-01_T1w", "brain mask",
                                                              defacers=("a", "b")),
                           bidsapp_traceback="WorkerDied: the worker was killed")
    crash = Crashed(node)
    assert crash.explains("sub-01_T1w", "b") and not crash.explains("sub-01_T2w", "b")
    assert crash.reason == "the step crashed: WorkerDied: the worker was killed"
    assert not Crashed(SimpleNamespace(name="merge")).explains("sub-01_T1w", "a")


@pytest.mark.slow
def test_the_console_script_keeps_nipype_chatter_off_the_terminal(ds_faces, tmp_path):
    """Run as pip's console script runs it: "spawn" workers import that script as ``__main__``,
    which imports the workflows package before the worker knows its parent; the chatter must
    still go to logs/workers.log."""
    script = tmp_path / "bidsapp"
    script.write_text("import sys\nfrom bidsapp.cli.main import main\n"
                      "if __name__ == '__main__':\n    sys.exit(main())\n")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(script), str(ds_faces), str(out), "participant",
         "--participant-label", "ixi012", "--defacers", "quickshear", "--skip-metrics",
         "-w", str(tmp_path / "work")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "done quickshear on sub-ixi012_T1w" in proc.stdout
    assert "nipype.workflow" not in proc.stdout + proc.stderr
    assert "[Node] Finished" in (out / "logs" / "workers.log").read_text()
