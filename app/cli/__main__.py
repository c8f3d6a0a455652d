"""`python -m app.cli`: the same entry point as the `driftbench` script."""

import sys

from app.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
