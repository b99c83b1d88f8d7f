"""`python -m experiments.aggregate ...` from a checkout: the same as `harmcore aggregate ...` (see `--help`)."""

import sys

from harmcore.run.console import main

if __name__ == "__main__":
    main(["aggregate", *sys.argv[1:]])
