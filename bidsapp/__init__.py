"""bidsapp: compare defacing tools on a BIDS dataset and measure whether they worked."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bidsapp")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
