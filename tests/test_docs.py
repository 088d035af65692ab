"""The documentation builds with no warning, and its usage page shows every option of the CLI."""

from __future__ import annotations

import argparse
import html
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
NEEDED = {"sphinx": "sphinx", "sphinxarg": "sphinx-argparse", "myst_parser": "myst-parser",
          "furo": "furo"}

_MISSING = [name for module, name in NEEDED.items() if importlib.util.find_spec(module) is None]
pytestmark = [
    pytest.mark.skipif(bool(_MISSING), reason=f"the docs need {', '.join(_MISSING)} "
                                              "(pip install -e '.[docs]')"),
    pytest.mark.xdist_group("docs"),  # one build per test session, not one per worker
]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """Build the HTML docs once, warnings as errors; fail with Sphinx's own output."""
    out = tmp_path_factory.mktemp("docs_html")
    doctrees = tmp_path_factory.mktemp("doctrees")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
         "-d", str(doctrees), str(DOCS), str(out)],
        check=False, capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert result.returncode == 0, (
        f"sphinx-build failed (exit {result.returncode}):\n{result.stderr}\n{result.stdout}")
    return out


def test_docs_build_without_warnings(built):
    for page in ("index", "installation", "quickstart", "usage", "outputs", "metrics",
                 "defacers", "scaling", "changelog", "citing"):
        assert (built / f"{page}.html").is_file(), f"{page}.html was not built"


def test_usage_page_shows_every_option(built):
    from bidsapp.cli.parser import build_parser

    text = (built / "usage.html").read_text(encoding="utf-8")
    # sphinx-argparse writes each argument's names as one <kbd> term: "--nprocs, --n-cpus".
    shown = set()
    for term in re.findall(r"<kbd[^>]*>(.*?)</kbd>", text, re.DOTALL):
        shown.update(name.strip() for name in html.unescape(re.sub(r"<[^>]+>", "", term))
                     .split(","))
    parser = build_parser()
    # sphinx-argparse leaves -h/--help out of the list; the usage line shows it as "[-h]".
    listed = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    expected = {name for action in listed for name in action.option_strings}
    expected |= {action.dest for action in listed if not action.option_strings}
    missing = sorted(expected - shown)
    assert not missing, f"usage page lacks {missing}; shown: {sorted(shown)}"
    plain = " ".join(html.unescape(re.sub(r"<[^>]+>", "", text)).split())
    assert "usage: bidsapp [-h]" in plain


def test_defacer_page_lists_every_registered_defacer(built):
    from bidsapp.defacers import REGISTRY, get_defacer

    page = (built / "defacers.html").read_text(encoding="utf-8")
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())
    for name in REGISTRY:
        assert f'id="defacer-{name}"' in page, f"defacers page has no section for {name}"
        defacer = get_defacer(name)
        for value in (defacer.license, defacer.citation):
            assert " ".join(value.split()) in text, f"{name}: {value!r} not on the defacers page"


def test_pages_load_nothing_from_the_network(built):
    """The theme and pages work offline. Only MathJax, on a page with formulas, comes from a
    CDN (without it the formulas show as TeX)."""
    tag = re.compile(r"<(?:script|link|img)\b[^>]*?(?:src|href)=\"((?:https?:)?//[^\"]+)\"")
    for page in built.glob("*.html"):
        remote = [url for url in tag.findall(page.read_text(encoding="utf-8"))
                  if "mathjax" not in url.lower()]
        assert not remote, f"{page.name} loads {remote}"
