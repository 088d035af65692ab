"""The IQMs' template: TemplateFlow's files when TEMPLATEFLOW_HOME has them, else nilearn's maps.

The TemplateFlow path is tested with a ``TEMPLATEFLOW_HOME`` the test writes itself: nilearn's
bundled maps saved under TemplateFlow's layout and names. That tests the resolution mechanism
(TemplateFlow's API finds the files, the record names TemplateFlow), not TemplateFlow's data,
which cannot be downloaded here. Each path runs in a fresh process: templateflow reads its
configuration once, on import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from bidsapp.anatomy import templates

REPO = Path(__file__).resolve().parents[1]

#: IQMs and template record of the synthetic head, printed as JSON by a fresh process.
_SCRIPT = """
import json, sys, time
sys.path.insert(0, {tests!r})
from bidsapp.anatomy.templates import iqm_template
start = time.perf_counter()
source = iqm_template()
seconds = time.perf_counter() - start
imported = "templateflow" in sys.modules
import nibabel as nib
from records import _reference
from bidsapp.metrics.iqms.image import image_iqms
from bidsapp.metrics.measure import _template_record
reference = _reference()
result = image_iqms(reference.image, reference.brain_mask, tissues=reference.tissues)
print(json.dumps({{"record": _template_record(result), "label": result.masks.info["template"],
                  "imported": imported, "seconds": seconds, "files": source.files,
                  "tpm": {{k: v for k, v in result.iqms.items() if k.startswith("tpm_")}}}}))
"""


def _run(home: Path) -> dict:
    env = {**os.environ, "TEMPLATEFLOW_HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop("TEMPLATEFLOW_AUTOUPDATE", None)
    out = subprocess.run([sys.executable, "-c", _SCRIPT.format(tests=str(REPO / "tests"))],
                         env=env, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _write_bundled_maps(home: Path) -> None:
    """nilearn's maps in TemplateFlow's layout (a test of the mechanism, not TemplateFlow data)."""
    maps = templates._nilearn_maps()
    arrays = {"T1w": maps["t1"], "brain_mask": (maps["t1"] > 0).astype(np.uint8),
              "csf": maps["csf"], "gm": maps["gm"], "wm": maps["wm"]}
    for key, data in arrays.items():
        path = home / templates.file_name(key, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, maps["affine"]), path)


def test_file_names_follow_templateflow():
    assert templates.file_name("csf", 1) == (
        "tpl-MNI152NLin2009cAsym/tpl-MNI152NLin2009cAsym_res-01_label-CSF_probseg.nii.gz")
    assert templates.file_name("T1w", 2).endswith("_res-02_T1w.nii.gz")


def test_placeholders_fall_back_without_network(tmp_path, monkeypatch):
    """TemplateFlow's stub (0-byte files) counts as missing: nilearn, decided from disk."""
    for key in templates.QUERIES:
        path = tmp_path / templates.file_name(key, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path))
    templates.iqm_template.cache_clear()
    try:
        source = templates.iqm_template()
    finally:
        templates.iqm_template.cache_clear()
    assert source.source == "nilearn" and source.files == {}
    assert "5 TemplateFlow file(s) missing" in source.reason


def test_both_paths_give_records_naming_their_template(tmp_path):
    fallback = _run(tmp_path / "empty")
    assert fallback["record"] == {"source": "nilearn", "name": templates.FALLBACK}
    assert fallback["label"] == "MNI ICBM152 2009a sym (nilearn), affine"
    assert not fallback["imported"], "the offline path must not import templateflow"
    assert fallback["seconds"] < 0.05, "the offline check is a few file look-ups"

    _write_bundled_maps(tmp_path / "tf")
    resolved = _run(tmp_path / "tf")
    assert resolved["record"] == {"source": "templateflow",
                                  "name": "MNI152NLin2009cAsym res-01 (TemplateFlow)"}
    assert resolved["label"].startswith("MNI152NLin2009cAsym res-01 (TemplateFlow)")
    assert set(resolved["files"]) == set(templates.REQUIRED)
    assert all(Path(p).is_relative_to(tmp_path / "tf") for p in resolved["files"].values())
    # the same maps through either path give the same figures
    assert resolved["tpm"] == fallback["tpm"] and resolved["tpm"]
    print(f"offline check {fallback['seconds']:.4f} s, TemplateFlow resolution "
          f"{resolved['seconds']:.2f} s")
