"""`python -m experiments.run ...` from a checkout: the same as `harmcore run ...` (see `--help`)."""

import sys

from harmcore.run.console import main

if __name__ == "__main__":
    main(["run", *sys.argv[1:]])
