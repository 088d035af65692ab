"""Sphinx configuration of the bidsapp documentation.

Build (warnings are errors, as in the test suite)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Three things here keep the docs from drifting away from the code:

* the usage page renders the argument parser itself (sphinx-argparse, ``docs/usage.md``);
* the defacer table and citations are written at build time from
  :data:`bidsapp.defacers.REGISTRY` (:func:`defacer_markdown`, :func:`defacer_citations`),
  injected where a page says ``<!-- defacer-table -->`` or ``<!-- defacer-citations -->``;
* pages that other contributors write (``metrics_*.md``, ``reports.md``, ``export.md``,
  ``defacers_*.md``) are picked up by ``:glob:`` toctree entries; an entry that matches no file
  yet is dropped before Sphinx reads it (Sphinx would warn, and ``-W`` fail), and the ``optdoc``
  role links to such a page when it exists and prints its title as plain text when it does not.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.util import logging
from sphinx.util.nodes import split_explicit_title

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # document the checkout, also when not installed
os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("NIPYPE_NO_ET", "1")

from bidsapp import __version__

LOGGER = logging.getLogger("bidsapp.docs")

# -- project -----------------------------------------------------------------------------------
project = "bidsapp"
author = "The bidsapp developers"
copyright = "The bidsapp developers"
release = __version__
version = ".".join(__version__.split(".")[:2])

# -- general -----------------------------------------------------------------------------------
extensions = [
    "myst_parser",
    "sphinxarg.ext",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "examples"]
# "--nprocs" must stay two hyphens everywhere, not become an en dash.
smartquotes = False
# Code blocks without a language (the parser's usage line) are plain text, not Python.
highlight_language = "none"
nitpicky = False
# The docs never fetch anything: no intersphinx, no external images.
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath", "fieldlist", "substitution"]
# "[text](#a-heading)" links work inside a page, down to ### headings.
myst_heading_anchors = 3
myst_substitutions = {"version": __version__}

# -- HTML --------------------------------------------------------------------------------------
# furo uses the system font stack and ships every asset in the wheel: the pages work offline.
html_theme = "furo"
html_title = f"bidsapp {__version__}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
html_last_updated_fmt = None

# -- pages written by other contributors -------------------------------------------------------
_TOCTREE = re.compile(r"^(?P<fence>```+|:::+)\{toctree\}[^\n]*\n(?P<body>.*?)^(?P=fence)\s*$",
                      re.MULTILINE | re.DOTALL)
_GLOB_CHARS = re.compile(r"[*?\[]")


def _matches(pattern: str, folder: Path) -> bool:
    """Whether a toctree glob (relative to ``folder``) names at least one source file."""
    return any(p.suffix in source_suffix and p.is_file() for p in folder.glob(pattern + ".*"))


def drop_empty_globs(text: str, folder: Path) -> str:
    """Remove ``:glob:`` toctree entries that match no page yet (Sphinx warns about them).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "metrics_iqms.md").write_text("# IQMs")
    ...     print(drop_empty_globs("```{toctree}\\n:glob:\\n\\nmetrics_*\\nreport*\\n```\\n",
    ...                            Path(tmp)), end="")
    ```{toctree}
    :glob:
    <BLANKLINE>
    metrics_*
    ```
    """
    def fix(match: re.Match) -> str:
        body = match.group("body")
        if not re.search(r"^:glob:", body, re.MULTILINE):
            return match.group(0)
        kept = [line for line in body.splitlines(keepends=True)
                if line.startswith(":") or not _GLOB_CHARS.search(line)
                or _matches(line.strip(), folder)]
        return match.group(0).replace(body, "".join(kept))

    return _TOCTREE.sub(fix, text)


def optdoc_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """``{optdoc}`Title <page>```: a link to ``page`` when it exists, else the title as text."""
    env = inliner.document.settings.env
    _, title, target = split_explicit_title(text)
    if target not in env.found_docs:
        return [nodes.inline(rawtext, title)], []
    ref = addnodes.pending_xref(rawtext, refdomain="std", reftype="doc", reftarget=target,
                                refexplicit=True, refwarn=True, refdoc=env.docname)
    ref += nodes.inline(title, title, classes=["xref", "std", "std-doc"])
    return [ref], []


# -- the defacer table, from the registry ------------------------------------------------------
def _cell(text: str) -> str:
    return " ".join(str(text or "").split()).replace("|", "\\|") or "-"


def defacer_facts(name: str) -> dict[str, str]:
    """What the docs show about one registry entry (read from the defacer object)."""
    from bidsapp.defacers import REGISTRY, get_defacer

    defacer = get_defacer(name)
    kind = getattr(defacer, "kind", "native")
    if defacer.summary == "cannot be loaded":  # registry._Missing: the docs must not hide it
        LOGGER.warning("defacer %r (%s) cannot be imported while building the docs: %s",
                       name, REGISTRY[name], defacer.availability().reason)
    if kind == "external":
        programs = list(getattr(defacer, "executables", ()))
        if getattr(defacer, "atlases", ()):
            programs.append("mri_deface")
        needs = [", ".join(f"`{p}`" for p in programs) or f"[see below](#defacer-{name})"]
    else:
        needs = ["pip"]
    if getattr(defacer, "needs_brain_mask", False):
        needs.append("the brain mask")
    return {
        "name": name, "title": defacer.title, "summary": defacer.summary,
        "kind": "container" if kind == "external" else "native",
        "needs": ", ".join(needs),
        "guard": "on" if getattr(defacer, "guard_by_default", False) else "off",
        "license": defacer.license, "citation": defacer.citation,
    }


def defacer_markdown() -> str:
    """The Markdown table of every registered defacer, in registry (run) order."""
    from bidsapp.defacers import REGISTRY

    header = ["defacer (`desc-`)", "what it does", "kind: needs", "license", "cite"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in REGISTRY:
        f = defacer_facts(name)
        guard = "; brain guard on by default" if f["guard"] == "on" else ""
        lines.append("| " + " | ".join([
            f"[`{name}`](#defacer-{name}): {_cell(f['title'])}", _cell(f["summary"]),
            f"{f['kind']}: {_cell(f['needs'])}{guard}", _cell(f["license"]),
            _cell(f["citation"])]) + " |")
    return "\n".join(lines) + "\n"


def defacer_sections(text: str) -> str:
    """A short section for every registered defacer that ``defacers.md`` does not describe yet.

    Hand-written sections start with the label ``(defacer-<name>)=``. A section for a name that
    is no longer in the registry is a warning (the page would describe a defacer that is gone).
    """
    from bidsapp.defacers import REGISTRY

    written = set(re.findall(r"^\(defacer-([A-Za-z0-9]+)\)=\s*$", text, re.MULTILINE))
    for gone in sorted(written - set(REGISTRY)):
        LOGGER.warning("docs/defacers.md describes %r, which is not in bidsapp.defacers.REGISTRY;"
                       " remove its section", gone, location="defacers")
    parts = []
    for name in REGISTRY:
        if name in written:
            continue
        f = defacer_facts(name)
        parts.append(f"(defacer-{name})=\n### `{name}`: {f['title']}\n\n{f['summary']}.\n\n"
                     f"- {f['kind']}; needs: {f['needs']}; brain guard by default: "
                     f"{f['guard']}\n- license: {f['license']}\n- cite: {f['citation']}\n")
    return "\n".join(parts)


def defacer_citations() -> str:
    """A Markdown list: each registered defacer's name, title and citation."""
    from bidsapp.defacers import REGISTRY

    return "\n".join(f"- **`{name}`** ({_cell(f['title'])}): {_cell(f['citation'])}"
                     for name, f in ((n, defacer_facts(n)) for n in REGISTRY)) + "\n"


def on_source_read(app, docname: str, source: list[str]) -> None:
    text = source[0]
    folder = (DOCS / docname).parent
    if "{toctree}" in text:
        text = drop_empty_globs(text, folder)
    if "<!-- defacer-table -->" in text:
        text = text.replace("<!-- defacer-table -->", defacer_markdown())
    if "<!-- defacer-citations -->" in text:
        text = text.replace("<!-- defacer-citations -->", defacer_citations())
    if "<!-- defacer-sections -->" in text:
        text = text.replace("<!-- defacer-sections -->", defacer_sections(text))
    source[0] = text


def always_reread(app, env, added, changed, removed):
    """Pages generated from the code (and the index, whose toctree depends on which pages
    exist) are read on every build, even an incremental one."""
    generated = ("defacers", "citing", "usage", "index", "metrics", "outputs")
    return [name for name in generated if name in env.found_docs]


def setup(app):
    app.connect("source-read", on_source_read)
    app.connect("env-get-outdated", always_reread)
    app.add_role("optdoc", optdoc_role)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
