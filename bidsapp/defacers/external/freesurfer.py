"""FreeSurfer's mri_deface as an external defacer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bidsapp.defacers.base import DefaceRequest
from bidsapp.defacers.external.tool import ExternalDefacer, missing_files


class MriDeface(ExternalDefacer):
    name = "mrideface"
    title = "mri_deface"
    summary = "FreeSurfer's mri_deface: GCA atlas registration, zeroes face voxels off the brain"
    citation = ("Bischoff-Grethe A, Ozyurt IB, Busa E, et al. (2007). A technique for the "
                "deidentification of structural brain MR images. Hum Brain Mapp 28:892-903.")
    license = "FreeSurfer license"
    atlases = ("talairach_mixed_with_skull.gca", "face.gca")

    def data_dir(self) -> Path | None:
        """$BIDSAPP_MRIDEFACE_DIR, else $FREESURFER_HOME/average."""
        if os.environ.get("BIDSAPP_MRIDEFACE_DIR"):
            return Path(os.environ["BIDSAPP_MRIDEFACE_DIR"])
        if os.environ.get("FREESURFER_HOME"):
            return Path(os.environ["FREESURFER_HOME"]) / "average"
        return None

    def executable(self) -> str | None:
        folder = self.data_dir()
        if folder is not None and (folder / "mri_deface").is_file():
            return str(folder / "mri_deface")
        return shutil.which("mri_deface")

    def missing(self) -> list[str]:
        lacking = [] if self.executable() else ["no mri_deface binary"]
        folder = self.data_dir()
        absent = missing_files(folder, self.atlases)
        if absent:
            where = (f"in {folder}" if folder else
                     "(set BIDSAPP_MRIDEFACE_DIR to their folder, or FREESURFER_HOME)")
            lacking.append(f"atlases not found {where}: {', '.join(absent)}")
        return lacking

    def version(self) -> str | None:
        return os.environ.get("BIDSAPP_MRIDEFACE_VERSION")

    def command(self, staged: str, request: DefaceRequest) -> list[str]:
        folder = self.data_dir()
        return [self.executable(), staged, *(str(folder / name) for name in self.atlases),
                self.output]
