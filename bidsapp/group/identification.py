"""The group level's re-identification attack (:mod:`bidsapp.identification`) and its rates."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from bidsapp.results.records import Collection, defacer_order, suffix_order

LOGGER = logging.getLogger("bidsapp")


def identify(bids_dir: Path, output_dir: Path, found: Collection) -> tuple[pd.DataFrame | None,
                                                                         list[str]]:
    """The re-identification attack on the collected results (:mod:`bidsapp.identification`)."""
    from bidsapp.identification import attack_dataset

    start = time.perf_counter()
    keys = sorted({r.image for r in found.inputs if r.data.get("status") == "ok"})
    results = [(r.image, r.defacer) for r in found.results if r.data.get("status") == "ok"]
    table, problems = attack_dataset(bids_dir, output_dir, keys, results, log=LOGGER.info)
    if table is not None:
        LOGGER.info("identification attack: %d probe(s) of %d original(s) in %.1f s",
                    len(table), len(keys), time.perf_counter() - start)
    return table, problems


def merge_identification(table: pd.DataFrame, identification: pd.DataFrame | None
                         ) -> pd.DataFrame:
    """The attack's columns beside each result row (by image and defacer)."""
    if identification is None or identification.empty:
        return table
    columns = [c for c in identification.columns if c.startswith("identification.")]
    return table.merge(identification[["image", "defacer", *columns]], how="left",
                       on=["image", "defacer"])


def identification_summary(identification: pd.DataFrame | None) -> pd.DataFrame:
    """Rank-1/rank-5 rates per suffix and defacer, the originals' own rate first."""
    from bidsapp.identification import ORIGINAL, rates

    frame = rates(identification)
    if frame.empty:
        return frame
    suffixes = {name: i for i, name in enumerate(suffix_order(frame["suffix"]))}
    names = {name: i for i, name in enumerate(
        [ORIGINAL] + defacer_order(d for d in frame["defacer"] if d != ORIGINAL))}
    frame = frame.assign(_s=frame["suffix"].map(suffixes), _d=frame["defacer"].map(names))
    return frame.sort_values(["_s", "_d"]).drop(columns=["_s", "_d"]).reset_index(drop=True)


