"""The results layer: reading what the participant and group levels wrote into ``output_dir``.

Below the reports, the group level, the export and the CLI, above nothing but :mod:`bidsapp.bids`
and :mod:`bidsapp.verdicts`:

* :mod:`~bidsapp.results.records`: the JSON records (:func:`collect`), which defacers ran;
* :mod:`~bidsapp.results.tables`: one row per record, headline columns, verdicts;
* :mod:`~bidsapp.results.group_tables`: the group tables' names and format, read back;
* :mod:`~bidsapp.results.links`: report anchors and figure files.
"""

from bidsapp.results.group_tables import (
    IDENTIFICATION_TABLE, MISSING_TABLE, RATINGS, RATINGS_DIR, SUMMARY_TABLE, read_group_results,
    read_verdicts, result_table, result_tables,
)
from bidsapp.results.links import anchor, figure_path
from bidsapp.results.records import (
    Collection, Record, collect, defacer_order, defacers_run, flatten, image_order, subject_of,
    suffix_order,
)
from bidsapp.results.tables import (
    add_verdicts, aggregate, iqm_difference_columns, is_iqm, metric_columns, rows,
)

__all__ = [
    "IDENTIFICATION_TABLE", "MISSING_TABLE", "RATINGS", "RATINGS_DIR", "SUMMARY_TABLE",
    "Collection", "Record", "add_verdicts", "aggregate", "anchor", "collect", "defacer_order",
    "defacers_run", "figure_path", "flatten", "image_order", "iqm_difference_columns", "is_iqm",
    "metric_columns", "read_group_results", "read_verdicts", "result_table", "result_tables",
    "rows", "subject_of", "suffix_order",
]
