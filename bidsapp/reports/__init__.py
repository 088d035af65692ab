"""Participant and group reports: figures (:mod:`.plots`), HTML (:mod:`.participant`).

The group level itself lives in :mod:`bidsapp.group`. Templates, the stylesheet and the rating
script are package data in ``data/``, loaded here only, and inlined into every report: nothing
is ever fetched from the network (a Content-Security-Policy in each page forbids it too).
"""

from __future__ import annotations

import base64
from functools import lru_cache
from importlib import resources
from pathlib import Path


def asset(name: str) -> str:
    """The text of a packaged asset (``data/<name>``)."""
    return resources.files(__name__).joinpath("data", name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: asset(name)),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True, keep_trailing_newline=True,
    )
    env.filters["number"] = format_number
    return env


def render_template(name: str, **context) -> str:
    """Render ``data/<name>`` (autoescaped) with the shared stylesheet available as ``css``.

    The verdict's required features and their threshold are available as ``features`` and
    ``feature_min``, so that every report states the rule :func:`bidsapp.verdicts.verdict` applies.
    """
    from markupsafe import Markup

    from bidsapp.verdicts import FEATURE_REMOVED_MIN_PCT, FEATURES

    context.setdefault("css", Markup(asset("report.css")))
    context.setdefault("features", FEATURES)
    context.setdefault("feature_min", FEATURE_REMOVED_MIN_PCT)
    return _environment().get_template(name).render(**context)


def bidsapp_version(output_dir: Path) -> str:
    """The bidsapp version that wrote ``output_dir`` (its ``dataset_description.json``)."""
    import json

    try:
        description = json.loads((Path(output_dir) / "dataset_description.json").read_text())
        return str(description["GeneratedBy"][0]["Version"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        from bidsapp import __version__

        return __version__


def citation_link(output_dir: Path) -> str | None:
    """The participant level's methods boilerplate (relative link), when it was written."""
    link = "logs/CITATION.html"
    return link if (Path(output_dir) / link).is_file() else None


def data_uri(path: Path, mime: str = "image/png") -> str:
    """A ``data:`` URI holding the file's bytes, to inline a figure."""
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def format_number(value, digits: int = 3) -> str:
    """Short human form of a metric: integers as is, floats to ``digits`` significant digits.

    >>> format_number(12345), format_number(0.123456), format_number(None), format_number(True)
    ('12345', '0.123', 'n/a', 'yes')
    """
    import math

    import numpy as np
    import pandas as pd

    if value is None or (np.ndim(value) == 0 and not isinstance(value, str) and pd.isna(value)):
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return "n/a"
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    if abs(number) >= 10 ** digits:
        return f"{number:.0f}"
    return f"{number:.{digits}g}"
