"""Where the reports put things: a result's anchor in its participant report and the report
figures' files (the group report's gallery links both)."""

from __future__ import annotations

from pathlib import Path

from bidsapp.bids import bids_stem, parse_name
from bidsapp.results.records import subject_of


def anchor(image: str, defacer: str | None = None) -> str:
    """The HTML id of an image's section, or of one defacer's card in it."""
    return image if defacer is None else f"{image}--{defacer}"


def figure_path(output_dir: Path, image: str, suffix: str, desc: str, kind: str) -> Path:
    """Where a report figure lives:
    ``sub-X/figures/<entities>_mod-<suffix>_desc-<desc>_<kind>.png``.

    >>> figure_path(Path("out"), "sub-01_ses-a_T1w", "T1w", "quickshear", "render").as_posix()
    'out/sub-01/figures/sub-01_ses-a_mod-T1w_desc-quickshear_render.png'
    """
    parsed = parse_name(image)
    if parsed is None:
        raise ValueError(f"{image!r} is not a BIDS image key (sub-<label>_..._<suffix>)")
    stem = bids_stem(parsed[0], kind, mod=suffix, desc=desc)
    return Path(output_dir) / f"sub-{subject_of(image)}" / "figures" / f"{stem}.png"
