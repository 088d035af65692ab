"""``python -m bidsapp``."""

import sys

from bidsapp.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
