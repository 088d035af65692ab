"""The documented cluster path on a real SLURM: docs/examples/bidsapp_array.sbatch as a job array
over participants of ds-faces, the group level as a job depending on it (``afterany``), and the
outputs compared with a plain local run of the same participants.

Starts munge, slurmctld and slurmd on localhost (:mod:`slurmcluster`); needs root and Debian's
``slurm-wlm`` and ``munge``. Skipped without them, but fails instead in CI
(``BIDSAPP_REQUIRE_ROOT=1``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest

from bidsapp.compare_runs import is_cost
from conftest import file_hashes
from edgecases import explain, run_bidsapp
from slurmcluster import Cluster, missing_programs

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPT = Path(__file__).parents[1] / "docs" / "examples" / "bidsapp_array.sbatch"
#: Tasks 3-5 are lines 4-6 of ds-faces' participants.tsv; task 9 has no line (the script exits 2).
TASKS, PARTICIPANTS, BAD_TASK = "3-5", ("hfs", "ixi012", "ixi015"), "9"
#: Cheap participant runs: one defacer, no metrics; one CPU per task, so two run at once.
OPTIONS = ("--defacers", "facecut", "--skip-metrics")
TIMEOUT_S = 600


def _require_slurm() -> None:
    reason = None
    if os.geteuid() != 0:
        reason = "needs root (runs munge, slurmctld and slurmd)"
    elif missing_programs():
        reason = f"needs slurm-wlm and munge (missing {', '.join(missing_programs())})"
    if reason:
        if os.environ.get("BIDSAPP_REQUIRE_ROOT"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    _require_slurm()
    cluster = Cluster(tmp_path_factory.mktemp("slurm"), cpus=2, memory_mb=8000)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _seconds(job: dict[str, str]) -> float:
    parse = time.strptime
    start, end = (time.mktime(parse(job[k], "%Y-%m-%dT%H:%M:%S")) for k in ("StartTime",
                                                                             "EndTime"))
    return end - start


@pytest.fixture(scope="module")
def runs(cluster, ds_faces, tmp_path_factory):
    """The array and group jobs on the cluster, then the same participants run locally."""
    root = tmp_path_factory.mktemp("slurm-runs")
    (root / "logs").mkdir()
    before = file_hashes(ds_faces)
    start = time.perf_counter()
    env = {"RUNNER": "local", "BIDSAPP": f"{sys.executable} -m bidsapp",
           "BIDS_DIR": str(ds_faces), "OUT_DIR": str(root / "out"),
           "WORK_ROOT": str(root / "work"), "BIDSAPP_ARGS": " ".join(OPTIONS)}
    array = cluster.sbatch(f"--array={TASKS},{BAD_TASK}", "--cpus-per-task=1", "--mem=4G",
                           "--time=00:20:00", str(SCRIPT), cwd=root, env=env)
    group_job = cluster.sbatch(
        f"--dependency=afterany:{array}", "--cpus-per-task=2", "--mem=4G", "--time=00:10:00",
        "--job-name=bidsapp-group", "--output=logs/%x-%j.out",
        "--wrap", f"{sys.executable} -m bidsapp {ds_faces} {root / 'out'} group "
                  "--skip-identification", cwd=root, env=env)
    jobs = cluster.wait([array, group_job], TIMEOUT_S)
    slurm_s = time.perf_counter() - start
    local, local_s = run_bidsapp(ds_faces, root / "local", "participant", "-w",
                                 root / "local-work", "--participant-label", *PARTICIPANTS,
                                 "--nprocs", 2, "--omp-nthreads", 1, *OPTIONS)
    assert local.returncode == 0, explain(local)
    local_group, _ = run_bidsapp(ds_faces, root / "local", "group", "--skip-identification")
    summary = {"array": array, "group": group_job, "slurm_s": round(slurm_s, 1),
               "local_s": round(local_s, 1),
               "jobs": [(j["JobId"], j.get("ArrayTaskId"), j["JobState"], j["ExitCode"],
                         _seconds(j)) for k in (array, group_job) for j in jobs[k]]}
    print(f"\nslurm runs: {json.dumps(summary)}")
    return {"root": root, "out": root / "out", "local": root / "local", "jobs": jobs,
            "array": array, "group": group_job, "before": before,
            "local_group": local_group}


def _task_log(root: Path, array: str, task: str) -> str:
    logs = [root / "logs" / f"bidsapp-{array}_{task}.{ext}" for ext in ("out", "err")]
    return "\n".join(p.read_text() for p in logs if p.is_file())


def test_every_array_task_ended_as_expected(runs):
    tasks = {j["ArrayTaskId"]: j for j in runs["jobs"][runs["array"]]}
    assert sorted(tasks) == ["3", "4", "5", BAD_TASK]
    for task in ("3", "4", "5"):
        job = tasks[task]
        assert (job["JobState"], job["ExitCode"]) == ("COMPLETED", "0:0"), \
            _task_log(runs["root"], runs["array"], task)
        label = PARTICIPANTS[int(task) - 3]
        assert f"sub-{label} on " in _task_log(runs["root"], runs["array"], task)
    # a task past the end of participants.tsv fails on its own, with a message in its log
    assert (tasks[BAD_TASK]["JobState"], tasks[BAD_TASK]["ExitCode"]) == ("FAILED", "2:0")
    assert "participants.tsv has no line 10" in _task_log(runs["root"], runs["array"], BAD_TASK)


def test_the_group_job_ran_after_every_task(runs):
    (group_job,) = runs["jobs"][runs["group"]]
    log = (runs["root"] / "logs" / f"bidsapp-group-{runs['group']}.out").read_text()
    assert (group_job["JobState"], group_job["ExitCode"]) == ("COMPLETED", "0:0"), log
    last_task_end = max(j["EndTime"] for j in runs["jobs"][runs["array"]])
    assert group_job["StartTime"] >= last_task_end


def test_each_participant_has_valid_outputs_and_its_own_work_folder(runs, ds_faces):
    out = runs["out"]
    for label in PARTICIPANTS:
        records = sorted((out / f"sub-{label}" / "anat").glob("*_desc-facecut_*.json"))
        assert records, f"sub-{label}: no facecut record"
        for record in records:
            data = json.loads(record.read_text())
            assert data["status"] == "ok", data
            image = nib.load(record.with_suffix(".nii.gz"))
            assert image.get_fdata().any()
        assert (out / f"sub-{label}.html").is_file()
        assert (runs["root"] / "work" / f"sub-{label}").is_dir()
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "bidsapp"
    assert file_hashes(ds_faces) == runs["before"]


def test_the_group_outputs_are_complete_and_list_the_participants_not_run(runs):
    out = runs["out"]
    table = pd.read_csv(out / "group_T1w.tsv", sep="\t")
    assert sorted(set(table["subject"].astype(str))) == sorted(PARTICIPANTS)
    assert set(table["defacer"]) == {"facecut"} and set(table["status"]) == {"ok"}
    summary = pd.read_csv(out / "group_summary.tsv", sep="\t")
    assert summary.loc[0, "n_images"] == len(PARTICIPANTS)
    missing = pd.read_csv(out / "group_missing.tsv", sep="\t")
    assert sorted(missing["participant_id"]) == ["sub-adi", "sub-hfp", "sub-uber", "sub-xa30"]
    html = (out / "group_report.html").read_text()
    assert "Participants without results (4)" in html
    for label in PARTICIPANTS:
        assert f"sub-{label}.html" in html


def _record(path: Path) -> dict:
    """The record apart from its costs (time, memory, shared steps: bidsapp.compare_runs')."""
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if not is_cost(k)}


def test_the_outputs_equal_a_local_run(runs):
    out, local = runs["out"], runs["local"]
    assert runs["local_group"].returncode == 0, explain(runs["local_group"])
    images = sorted(p.relative_to(out) for p in out.glob("sub-*/anat/*.nii.gz"))
    assert images == sorted(p.relative_to(local) for p in local.glob("sub-*/anat/*.nii.gz"))
    for name in images:
        assert (out / name).read_bytes() == (local / name).read_bytes(), name
    records = sorted(p.relative_to(out) for p in out.glob("sub-*/anat/*.json"))
    assert records == sorted(p.relative_to(local) for p in local.glob("sub-*/anat/*.json"))
    for name in records:
        assert _record(out / name) == _record(local / name), name
    for table in ("group_T1w.tsv", "group_summary.tsv", "group_missing.tsv"):
        ours, theirs = (pd.read_csv(root / table, sep="\t") for root in (out, local))
        timing = [c for c in ours.columns if is_cost(c)]
        pd.testing.assert_frame_equal(ours.drop(columns=timing), theirs.drop(columns=timing))
