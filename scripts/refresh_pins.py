#!/usr/bin/env python3
"""Refresh or check the download pins of the Dockerfile, on a machine with network access.

Every pin is an ARG default of the Dockerfile (there is no other pin file):

  BASE_IMAGE          debian:bookworm-slim@sha256:...   (registry digest of the tag's index)
  MICROMAMBA_*        version and the SHA-256 its publisher puts beside the release asset
  FSL_PINS            name=version=build=sha256 of each FSL package, from FSL's channel repodata
  FSL_UNPINNED        FSL packages resolved at build time (moved into FSL_PINS by an update)
  MRIDEFACER_COMMIT   a commit of github.com/mih/mridefacer
  *_SHA256            SHA-256 of a file download, or "unpublished" where the publisher gives none

  scripts/refresh_pins.py --check        verify every pin against its source; exit 1 on a mismatch
                                         ("unpublished" files are downloaded and their SHA-256
                                         printed: there is nothing published to compare with)
  scripts/refresh_pins.py                resolve the newest versions (or those asked for), write
                                         the new pins into the Dockerfile, print what changed
      --base-tag bookworm-slim --micromamba 2.0.5-0 --mridefacer-ref master
      --record-unpublished               also download the "unpublished" files and pin their
                                         SHA-256 as computed now (trust on first use: review the
                                         diff; the build then verifies them)
      --dry-run                          print the changes, do not write

Nothing here runs during the image build; the build verifies the pins this script writes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[1] / "Dockerfile"
HEX64 = re.compile(r"[0-9a-f]{64}")
FSL_CHANNEL = "https://fsl.fmrib.ox.ac.uk/fsldownloads/fslconda/public"
MICROMAMBA_RELEASES = "https://github.com/mamba-org/micromamba-releases/releases"
#: The file downloads whose publishers give no checksum: ARG -> URL template (ARGs substituted).
UNPUBLISHED = {
    "MRIDEFACE_BINARY_SHA256": "${MRIDEFACE_URL}/mri_deface-v${MRIDEFACE_VERSION}-Linux64.gz",
    "MRIDEFACE_TALAIRACH_SHA256": "${MRIDEFACE_URL}/talairach_mixed_with_skull.gca.gz",
    "MRIDEFACE_FACE_SHA256": "${MRIDEFACE_URL}/face.gca.gz",
    "AFNI_SHA256": "${AFNI_URL}",
    "MCR_SHA256": "https://ssd.mathworks.com/supportfiles/downloads/${MATLAB_VERSION}/Release/"
                  "${MCR_UPDATE}/deployment_files/installer/complete/glnxa64/"
                  "MATLAB_Runtime_${MATLAB_VERSION}_Update_${MCR_UPDATE}_glnxa64.zip",
    "SPM_SHA256": "https://www.fil.ion.ucl.ac.uk/spm/download/restricted/bids/"
                  "spm12_${SPM_REVISION}_Linux_${MATLAB_VERSION}.zip",
}


# ------------------------------------------------------------------------ the Dockerfile's ARGs


def read_args(text: str) -> dict[str, str]:
    """ARG defaults (first definition wins), with backslash-continued values joined."""
    joined = re.sub(r"\\\n", "\n", text)  # keep newlines so values stay readable
    args: dict[str, str] = {}
    for m in re.finditer(r'^ARG (\w+)=("([^"]*)"|\S*)', joined, flags=re.M):
        value = m.group(3) if m.group(3) is not None else m.group(2)
        args.setdefault(m.group(1), " ".join(value.split()))
    return args


def write_arg(text: str, name: str, value: str) -> str:
    """Every `ARG name=...` default set to value (a quoted, continued value for long lists)."""
    if " " in value:  # a list: quoted, one item a line when long
        items = value.split()
        value = '"' + (" \\\n" if len(value) > 90 else " ").join(items) + '"'
    pattern = re.compile(rf'^ARG {name}=("[^"]*"|\S*)', flags=re.M)
    if not pattern.search(text):
        raise KeyError(f"no ARG {name} in the Dockerfile")
    return pattern.sub(lambda _m: f"ARG {name}={value}", text)


def substitute(template: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), template)


def parse_fsl_pins(value: str) -> list[tuple[str, str, str, str]]:
    pins = []
    for item in value.split():
        parts = item.split("=")
        if len(parts) != 4 or not HEX64.fullmatch(parts[3]):
            raise ValueError(f"FSL pin {item!r} is not name=version=build=sha256")
        pins.append(tuple(parts))
    return pins


# ---------------------------------------------------------------------------------- the network


def get(url: str, headers: dict | None = None, method: str = "GET"):
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    return urllib.request.urlopen(request, timeout=120)


def sha256_of_url(url: str) -> str:
    digest = hashlib.sha256()
    with get(url) as response:
        for block in iter(lambda: response.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def registry_digest(image: str) -> str:
    """Docker Hub: the digest of repository:tag (the multi-platform index)."""
    name, tag = image.split("@")[0].split(":")
    repo = name if "/" in name else f"library/{name}"
    with get(f"https://auth.docker.io/token?service=registry.docker.io&scope=repository:{repo}:pull") as r:
        token = json.load(r)["token"]
    accept = ", ".join(["application/vnd.oci.image.index.v1+json",
                        "application/vnd.docker.distribution.manifest.list.v2+json",
                        "application/vnd.docker.distribution.manifest.v2+json"])
    with get(f"https://registry-1.docker.io/v2/{repo}/manifests/{tag}", method="HEAD",
             headers={"Authorization": f"Bearer {token}", "Accept": accept}) as r:
        return r.headers["Docker-Content-Digest"]


def micromamba_published_sha256(version: str) -> str:
    with get(f"{MICROMAMBA_RELEASES}/download/{version}/micromamba-linux-64.sha256") as r:
        return r.read().decode().split()[0]


def micromamba_latest() -> str:
    with get(f"{MICROMAMBA_RELEASES}/latest", method="HEAD") as r:
        return r.geturl().rstrip("/").rsplit("/", 1)[-1]


def fsl_repodata() -> dict[str, dict]:
    """filename -> record, for linux-64 and noarch of FSL's channel."""
    records = {}
    for subdir in ("linux-64", "noarch"):
        with get(f"{FSL_CHANNEL}/{subdir}/repodata.json") as r:
            data = json.load(r)
        for key in ("packages", "packages.conda"):
            records.update(data.get(key, {}))
    return records


def newest(records: dict[str, dict], name: str, version: str | None = None) -> dict:
    def Version(text: str) -> tuple:  # FSL versions are dotted numbers (2111.4, 0.7.0)
        return tuple(int(n) for n in re.findall(r"\d+", text))

    found = [r for r in records.values() if r["name"] == name
             and (version is None or r["version"] == version)]
    if not found:
        raise LookupError(f"{name}{'=' + version if version else ''} not on FSL's channel")
    return max(found, key=lambda r: (Version(r["version"]), r.get("build_number", 0),
                                     r.get("timestamp", 0)))


def git_commit(repo: str, ref: str) -> str:
    out = subprocess.run(["git", "ls-remote", repo, ref], capture_output=True, text=True,
                         check=True).stdout.split()
    if not out:
        raise LookupError(f"{ref} not found in {repo}")
    return out[0]


def git_has_commit(repo: str, commit: str) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["git", "init", "-q", tmp], check=True)
        fetched = subprocess.run(["git", "-C", tmp, "fetch", "-q", "--depth", "1", repo, commit],
                                 capture_output=True)
        if fetched.returncode:
            return False
        head = subprocess.run(["git", "-C", tmp, "rev-parse", "FETCH_HEAD"], capture_output=True,
                              text=True).stdout.strip()
        return head == commit


# ------------------------------------------------------------------------------------ the checks


def check(args: dict[str, str]) -> list[str]:
    problems = []

    def report(ok: bool, what: str, detail: str = "") -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail else ''}")
        if not ok:
            problems.append(what)

    base = args["BASE_IMAGE"]
    current = registry_digest(base)
    pinned = base.split("@", 1)[1] if "@" in base else ""
    report(bool(pinned), "BASE_IMAGE has a digest", base)
    print(f"     {base.split('@')[0]} now points to {current}"
          f"{' (the pin)' if current == pinned else ' (the pin is older: run without --check)'}")
    published = micromamba_published_sha256(args["MICROMAMBA_VERSION"])
    report(published == args["MICROMAMBA_SHA256"], "MICROMAMBA_SHA256",
           f"published {published}")
    records = fsl_repodata()
    by_name_version_build = {(r["name"], r["version"], r["build"]): r for r in records.values()}
    for name, version, build, sha in parse_fsl_pins(args["FSL_PINS"]):
        record = by_name_version_build.get((name, version, build))
        report(record is not None and record.get("sha256") == sha,
               f"FSL {name}={version}={build}",
               "not on the channel" if record is None else f"repodata sha256 {record.get('sha256')}")
    for name in args.get("FSL_UNPINNED", "").split():
        record = newest(records, name)
        print(f"note FSL {name}: resolved at build time (newest now {record['version']}="
              f"{record['build']}, sha256 {record.get('sha256')}); a refresh pins it")
    report(git_has_commit(args["MRIDEFACER_REPO"], args["MRIDEFACER_COMMIT"]),
           "MRIDEFACER_COMMIT", f"{args['MRIDEFACER_REPO']}@{args['MRIDEFACER_COMMIT']}")
    for arg, template in UNPUBLISHED.items():
        url = substitute(template, args)
        digest = sha256_of_url(url)
        if HEX64.fullmatch(args.get(arg, "")):
            report(digest == args[arg], arg, f"{url} has {digest}")
        else:
            print(f"note {arg}: {url} has {digest} (no published checksum to compare with)")
    return problems


def update(text: str, args: dict[str, str], options) -> str:
    base_name = f"debian:{options.base_tag}" if options.base_tag else args["BASE_IMAGE"].split("@")[0]
    text = write_arg(text, "BASE_IMAGE", f"{base_name}@{registry_digest(base_name)}")
    version = options.micromamba or micromamba_latest()
    text = write_arg(text, "MICROMAMBA_VERSION", version)
    text = write_arg(text, "MICROMAMBA_SHA256", micromamba_published_sha256(version))
    records = fsl_repodata()
    names = [pin[0] for pin in parse_fsl_pins(args["FSL_PINS"])] + args.get("FSL_UNPINNED", "").split()
    pins = []
    for name in names:
        record = newest(records, name)
        if not HEX64.fullmatch(record.get("sha256", "")):
            raise LookupError(f"FSL's repodata gives no sha256 for {name}")
        pins.append("=".join([name, record["version"], record["build"], record["sha256"]]))
    text = write_arg(text, "FSL_PINS", " ".join(pins))
    text = write_arg(text, "FSL_UNPINNED", "")
    fsl_base = next(p.split("=")[1] for p in pins if p.startswith("fsl-base="))
    text = write_arg(text, "FSL_VERSION", fsl_base)
    commit = git_commit(args["MRIDEFACER_REPO"], options.mridefacer_ref)
    text = write_arg(text, "MRIDEFACER_COMMIT", commit)
    if options.record_unpublished:
        for arg, template in UNPUBLISHED.items():
            text = write_arg(text, arg, sha256_of_url(substitute(template, args)))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--check", action="store_true", help="verify the pins, change nothing")
    parser.add_argument("--dockerfile", type=Path, default=DOCKERFILE)
    parser.add_argument("--base-tag", help="Debian image tag (default: the pinned one's)")
    parser.add_argument("--micromamba", help="micromamba release (default: the latest)")
    parser.add_argument("--mridefacer-ref", default="HEAD", help="branch or tag of mridefacer")
    parser.add_argument("--record-unpublished", action="store_true",
                        help="pin the SHA-256 of the files whose publishers give none, as now")
    parser.add_argument("--dry-run", action="store_true")
    options = parser.parse_args(argv)
    text = options.dockerfile.read_text()
    args = read_args(text)
    if options.check:
        problems = check(args)
        print(f"{len(problems)} pin(s) failed" if problems else "every pin checked")
        return 1 if problems else 0
    new = update(text, args, options)
    before, after = read_args(text), read_args(new)
    for name in sorted(after):
        if before.get(name) != after[name]:
            print(f"{name}: {before.get(name)} -> {after[name]}")
    if not options.dry_run:
        options.dockerfile.write_text(new)
        print(f"wrote {options.dockerfile} (every definition of each ARG; "
              "tests/test_container_files.py checks that the repeated ones agree)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
