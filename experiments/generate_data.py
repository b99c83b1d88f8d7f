"""`python -m experiments.generate_data ...` from a checkout: `harmcore generate-data ...` (see `--help`)."""

import sys

from harmcore.run.console import main

if __name__ == "__main__":
    main(["generate-data", *sys.argv[1:]])
