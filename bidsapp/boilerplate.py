"""The methods boilerplate of a participant run: ``logs/CITATION.md``, ``.html`` and ``.bib``.

As in fMRIPrep, each participant workflow is a niworkflows ``LiterateWorkflow`` whose
``__desc__`` says in Markdown, with ``[@key]`` citations, what it runs: the brain extraction,
each defacer with its version, the registrations and the metrics (:func:`describe_participant`,
one paragraph per part). :func:`write_boilerplate` puts the run's participant workflows under a
run-level ``LiterateWorkflow`` whose ``__desc__``/``__postdesc__`` open and close the text, and
writes what ``visit_desc()`` collects (identical participants' text once). The references are
package data (``reports/data/citations.bib``); only the cited ones are written.
"""

from __future__ import annotations

import html
import logging
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

LOGGER = logging.getLogger("bidsapp")

#: BibTeX keys (``reports/data/citations.bib``) of each defacer's method.
DEFACER_REFERENCES = {
    "facecut": ("pydeface", "ants"), "quickshear": ("quickshear",),
    "deepdefacer": ("deepdefacer",), "facemask": ("pydeface", "ants"),
    "niimath": ("niimath", "pydeface"), "pydeface": ("pydeface",),
    "mrideface": ("mrideface",), "fsldeface": ("fsldeface",), "mridefacer": ("mridefacer",),
    "afnideface": ("afni",), "afnireface": ("afni",), "spmdeface": ("spmdeface",),
}
_CITATION = re.compile(r"\[(@[\w-]+(?:;\s*@[\w-]+)*)\]")
_ENTRY = re.compile(r"@(\w+)\{([\w-]+),\n(.*?)\n\}\n", re.S)
_FIELD = re.compile(r"^\s*(\w+) = \{(.*)\},?$", re.M)


def package_version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


def _cite(keys) -> str:
    return "[" + "; ".join(f"@{k}" for k in keys) + "]"


def describe_brain_mask() -> str:
    return (f"A brain mask of each original image was computed with *deepbet* "
            f"{package_version('deepbet')} [@deepbet].")


def describe_coregistration() -> str:
    return ("Other contrasts of a session with a T1w image were registered rigidly to it with "
            f"ANTs [@ants] (*antspyx* {package_version('antspyx')}), and the T1w's mask of "
            "altered voxels was carried over, so that every contrast loses the same face.")


def describe_defacers(defacers, guarded=(), margin_mm: float = 5.0) -> str:
    """One sentence per run: each defacer, its version and its references."""
    from bidsapp.defacers import availability, get_defacer

    items = []
    for name in defacers:
        defacer = get_defacer(name)
        keys = DEFACER_REFERENCES.get(name)
        where = _cite(keys) if keys else f"({defacer.citation})" if defacer.citation else ""
        items.append(f"*{defacer.title}* (`{name}`, version "
                     f"{availability(name).version or 'unknown'}) {where}: {defacer.summary}")
    count = "one tool" if len(items) == 1 else f"{len(items)} tools"
    text = (f"Each image was defaced with {count}, each in a process of its own on "
            "the original, the result brought back onto the input's grid and data type: "
            + "; ".join(items) + ".")
    if guarded:
        text += (f" bidsapp's brain guard put back every voxel within {margin_mm:g} mm of the "
                 f"brain mask that {', '.join(guarded)} changed.")
    return text


def describe_metrics() -> str:
    """The metrics and where their template comes from (TemplateFlow, or the fallback)."""
    from bidsapp.anatomy.templates import iqm_template

    source = iqm_template()
    if source.source == "templateflow":
        template = "TemplateFlow's [@templateflow] *MNI152NLin2009cAsym* template [@fonov2011]"
    else:
        template = ("the MNI ICBM152 2009a nonlinear symmetric maps bundled with *nilearn* "
                    f"{package_version('nilearn')} [@fonov2009; @fonov2011] (TemplateFlow's "
                    "MNI152NLin2009cAsym was not available)")
    return (
        "Each defaced image was compared with its original. Brain preservation: the voxels of "
        "the deepbet brain mask (and of a safety margin around it) that the defacer altered, and "
        "the agreement of deepbet masks of the original and the defaced image. Face removal: "
        "the proportion of the face's voxels altered, and face detection with *dlib* "
        f"{package_version('dlib-bin')} [@dlib; @mmod] on renders of the skin surface "
        f"(marching cubes [@marchingcubes], *scikit-image* {package_version('scikit-image')} "
        "[@skimage]). Downstream effects: intracranial, grey-matter, white-matter and CSF "
        "volumes after N4 bias correction [@n4] and Atropos segmentation [@atropos] (ANTs "
        f"through *antspyx* {package_version('antspyx')}). Image-quality metrics (IQMs) as "
        "defined by MRIQC [@mriqc; @mortamet], re-implemented, with the original's masks and with "
        "masks recomputed on the defaced image; their template tissue maps (`tpm_overlap_*`) "
        f"and landmark planes came from {template}, registered affinely with ANTs [@ants]."
    )


def describe_participant(defacers, *, metrics: bool, carried: bool, guarded=(),
                         margin_mm: float = 5.0) -> str:
    """A participant workflow's ``__desc__``: one paragraph per part that runs."""
    parts = [describe_brain_mask()]
    if carried:
        parts.append(describe_coregistration())
    parts.append(describe_defacers(defacers, guarded, margin_mm))
    if metrics:
        parts.append(describe_metrics())
    return "\n\n".join(parts) + "\n\n"


def _opening() -> str:
    from bidsapp import __version__

    return (
        f"Results included in this manuscript come from defacing performed with *bidsapp* "
        f"{__version__} (https://github.com/bidsapp/bidsapp), a BIDS App [@bidsapps; @bids] "
        f"built on *Nipype* {package_version('nipype')} [@nipype], *PyBIDS* "
        f"{package_version('pybids')} [@pybids] and *NiBabel* {package_version('nibabel')} "
        "[@nibabel].\n\n"
    )


_CLOSING = ("### Copyright Waiver\n\nThe above boilerplate text was automatically generated by "
            "bidsapp from the workflow that ran, with the express intention that users should "
            "copy and paste this text into their manuscripts *unchanged*. It is released under "
            "the CC0 license.\n")


def boilerplate(workflow) -> str:
    """The run's Markdown: its participant workflows' descriptions, opened and closed."""
    from nipype.pipeline import engine as pe
    from niworkflows.engine.workflows import LiterateWorkflow

    run_wf = LiterateWorkflow(name=workflow.name)
    run_wf.__desc__, run_wf.__postdesc__ = _opening(), _CLOSING
    run_wf.add_nodes([node for node in pe.utils.topological_sort(workflow._graph)[0]
                      if isinstance(node, LiterateWorkflow)])
    return run_wf.visit_desc()


def bibliography() -> dict[str, tuple[str, dict[str, str], str]]:
    """``key -> (entry type, fields, BibTeX text)`` of the packaged references."""
    from bidsapp.reports import asset

    return {m.group(2): (m.group(1), dict(_FIELD.findall(m.group(3))), m.group(0))
            for m in _ENTRY.finditer(asset("citations.bib"))}


def cited(markdown: str) -> list[str]:
    """The citation keys of ``markdown``, in order of first use."""
    keys = []
    for group in _CITATION.findall(markdown):
        keys += [k.strip().lstrip("@") for k in group.split(";")]
    return list(dict.fromkeys(keys))


def _reference_text(fields: dict[str, str]) -> str:
    """``Authors (year). Title. Journal volume:pages. doi``, from BibTeX fields."""
    authors = [a.split(",")[0].strip() for a in fields.get("author", "").split(" and ")]
    names = ", ".join(a for a in authors[:3] if a != "others")
    if len(authors) > 3 or "others" in authors:
        names += " et al."
    where = fields.get("journal") or fields.get("booktitle") or fields.get("publisher", "")
    if fields.get("volume"):
        where += f" {fields['volume']}"
    if fields.get("pages"):
        where += f":{fields['pages'].replace('--', '-')}"
    if fields.get("eprint"):
        where = f"arXiv:{fields['eprint']}"
    link = (f"doi:{fields['doi']}" if fields.get("doi") else fields.get("url", ""))
    text = f"{names} ({fields.get('year', 'n.d.')}). {fields.get('title', '')}. {where}. {link}"
    return re.sub(r"[{}\\]", "", text).replace(" .", ".").strip()


def to_html(markdown: str, references: list[tuple[str, str]]) -> str:
    """The boilerplate as a self-contained HTML page; citations become numbered links."""
    number = {key: i for i, (key, _) in enumerate(references, start=1)}

    def inline(text: str) -> str:
        text = html.escape(text, quote=False)
        text = re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)
        text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
        text = re.sub(r"(https?://[^\s)]+)", r'<a href="\1">\1</a>', text)
        return _CITATION.sub(lambda m: "[" + ", ".join(
            f'<a href="#ref-{k}">{number[k]}</a>' for k in cited(m.group(0))) + "]", text)

    body = []
    for block in markdown.strip().split("\n\n"):
        heading = re.match(r"(#+) (.*)", block)
        if heading:
            level = min(len(heading.group(1)), 6)
            body.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
        else:
            body.append(f"<p>{inline(block)}</p>")
    body.append("<h3>References</h3>\n<ol>")
    body += [f'<li id="ref-{key}">{html.escape(text)}</li>' for key, text in references]
    body.append("</ol>")
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            "<title>bidsapp: methods boilerplate</title>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def citation_files(workflow) -> dict[str, str]:
    """``{"CITATION.md", "CITATION.html", "CITATION.bib": text}`` of a run's workflow."""
    markdown = boilerplate(workflow)
    entries = bibliography()
    keys = [k for k in cited(markdown) if k in entries]
    references = [(k, _reference_text(entries[k][1])) for k in keys]
    listing = "\n".join(f"- [@{k}] {text}" for k, text in references)
    return {"CITATION.md": f"{markdown.rstrip()}\n\n### References\n\n{listing}\n",
            "CITATION.html": to_html(markdown, references),
            "CITATION.bib": "\n".join(entries[k][2] for k in keys)}


def log_template_choice() -> None:
    """Say once per run where the IQMs' template comes from (and why, for the fallback)."""
    from bidsapp.anatomy.templates import iqm_template

    source = iqm_template()
    if source.source == "nilearn":
        LOGGER.info("IQM template: %s (%s; docs/metrics_iqms.md says what differs)",
                    source.name, source.reason)
    else:
        LOGGER.info("IQM template: %s", source.name)
