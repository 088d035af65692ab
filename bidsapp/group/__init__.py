"""The group level: read every participant result in ``output_dir``, compare the defacers.

Reads only ``output_dir`` (records, figures, ratings) and writes into it:

* ``group_<suffix>.tsv``: one row per image and defacer with every metric of its record
  (nested keys flattened with dots), the headline columns, the verdict and the merged rating;
* ``group_summary.tsv``: one row per suffix and defacer (pass rate, face removal, brain voxels
  altered, IQM differences, time, memory, failures, ratings, recommended);
* ``group_report.html``: the summary, the recommendation, distributions per defacer, a gallery
  of renders and links to the participant reports (offline, self-contained but for the gallery's
  thumbnails, which are the participant reports' figure files).

Then every participant's report (``sub-<label>.html``) is rewritten, so that it shows the group
verdicts and the identification figures (:func:`bidsapp.results.read_group_results`).

The modules, from the top: :mod:`~bidsapp.group.level` (:func:`run_group`, the tables on
disk), :mod:`~bidsapp.group.report` (the HTML), :mod:`~bidsapp.group.summary`,
:mod:`~bidsapp.group.ratings` and :mod:`~bidsapp.group.identification`. Reading the records, the
verdicts and the tables written is the results layer's job (:mod:`bidsapp.results`). The pure
parts (:func:`bidsapp.results.aggregate`, :func:`summarise`, :func:`recommend`,
:func:`read_ratings`, :func:`merge_ratings`) take and return DataFrames, for tests and benchmarks.
"""

from bidsapp.group.level import (
    GroupOutputs, missing_participants, rewrite_reports, run_group, write_group_outputs,
)
from bidsapp.group.ratings import merge_ratings, read_ratings
from bidsapp.group.summary import recommend, summarise

__all__ = ["GroupOutputs", "merge_ratings", "missing_participants", "read_ratings", "recommend",
           "rewrite_reports", "run_group", "summarise", "write_group_outputs"]
