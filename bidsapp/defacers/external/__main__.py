"""``python -m bidsapp.defacers.external``: the external defacers' availability table."""

import sys

from bidsapp.defacers.external import main

if __name__ == "__main__":
    sys.exit(main())
