"""Did defacing work, and what did it cost the image? The metrics of one image and its defacers.

From the bottom up: the metric families (:mod:`.brain`, :mod:`.face`, :mod:`.face_regions`,
:mod:`.downstream`, :mod:`.iqms`), the original's shared state (:mod:`.reference`), one
defaced image's record (:mod:`.defacing`), and every defacer of one image in a child process
(:mod:`.measure`). Definitions: ``docs/metrics_defacing.md`` and ``docs/metrics_iqms.md``.
"""
