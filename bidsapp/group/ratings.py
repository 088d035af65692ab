"""Ratings exported from the participant reports, merged into the result table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd

def read_ratings(folder: Path) -> tuple[pd.DataFrame, list[str]]:
    """Every rating in ``folder/*.json`` and ``folder/*.tsv``; and the unreadable files.

    Returns columns image, defacer, rating, notes, rater, time, file.
    """
    entries, problems = [], []
    folder = Path(folder)
    for path in sorted(folder.glob("*.json")) + sorted(folder.glob("*.tsv")):
        try:
            if path.suffix == ".json":
                payload = json.loads(path.read_text())
                items = payload.get("ratings", []) if isinstance(payload, dict) else payload
                rater = payload.get("rater") if isinstance(payload, dict) else None
                if not isinstance(items, list):
                    raise ValueError("'ratings' is not a list")
            else:
                with path.open(newline="") as handle:
                    items = list(csv.DictReader(handle, delimiter="\t"))
                rater = None
            for item in items:
                if not isinstance(item, dict) or not item.get("image") or not item.get("defacer"):
                    raise ValueError("an entry lacks 'image' or 'defacer'")
                entries.append({
                    "image": str(item["image"]), "defacer": str(item["defacer"]),
                    "rating": str(item.get("rating") or ""),
                    "notes": str(item.get("notes") or ""),
                    "rater": str(item.get("rater") or rater or ""),
                    "time": str(item.get("time") or ""), "file": path.name,
                })
        except (OSError, ValueError, csv.Error) as exc:
            problems.append(f"{path}: not a bidsapp ratings file ({exc}); export it again "
                            "from a participant report")
    columns = ["image", "defacer", "rating", "notes", "rater", "time", "file"]
    return pd.DataFrame(entries, columns=columns), problems


def merge_ratings(table: pd.DataFrame, ratings: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Add ``rating``, ``rating_notes``, ``rater``, ``rating_time`` (latest rating wins).

    Returns the table and the number of ratings that match no result.
    """
    table = table.copy()
    if ratings.empty:
        for column in ("rating", "rating_notes", "rater", "rating_time"):
            table[column] = None
        return table, 0
    ratings = ratings.copy()
    ratings["_when"] = pd.to_datetime(ratings["time"], errors="coerce", utc=True)
    ratings = ratings.sort_values("_when", na_position="first", kind="stable")
    latest = ratings.drop_duplicates(["image", "defacer"], keep="last")
    latest = latest.rename(columns={"notes": "rating_notes", "time": "rating_time"})
    latest = latest[["image", "defacer", "rating", "rating_notes", "rater", "rating_time"]]
    keys = set(zip(table["image"], table["defacer"]))
    unmatched = sum(1 for k in zip(latest["image"], latest["defacer"]) if k not in keys)
    table = table.drop(columns=[c for c in latest.columns[2:] if c in table])
    merged = table.merge(latest, on=["image", "defacer"], how="left")
    merged[["rating", "rating_notes", "rater", "rating_time"]] = merged[
        ["rating", "rating_notes", "rater", "rating_time"]].astype(object).where(
        merged[["rating", "rating_notes", "rater", "rating_time"]].notna(), None)
    return merged, unmatched


