"""`python -m experiments.finetune_em ...` from a checkout: the same as `harmcore finetune-em ...` (see `--help`)."""

import sys

from harmcore.run.console import main

if __name__ == "__main__":
    main(["finetune-em", *sys.argv[1:]])
