"""The `harmcore` command: `harmcore run|generate-data|finetune-em|aggregate|export|serve ...`.

`--help` answers from the conf/ folder alone; the job machinery (torch, transformers, Hydra) is
imported only when a command runs, which is why this is the one module of harmcore that imports
inside a function. A user error ends in one line and exit status 1.
"""

from __future__ import annotations

import sys

from harmcore import __version__
from harmcore.errors import HarmcoreError, unknown_name
from harmcore.run import help as help_


def main(argv: list[str] | None = None) -> None:
    words = list(sys.argv[1:] if argv is None else argv)
    if not words or words[0] in ("-h", "--help"):
        print(help_.overview())
        return
    if words[0] == "--version":
        print(f"harmcore {__version__}")
        return
    name, rest = words[0], words[1:]
    try:
        if name not in help_.USAGE:
            raise unknown_name("command", name, help_.USAGE)
        if "-h" in rest or "--help" in rest:
            print(help_.command(name))
            return
        from harmcore.run import entry  # the heavy part: torch, transformers, Hydra
        from harmcore.run.failures import FAILED_JOBS

        entry.COMMANDS[name](rest)
    except HarmcoreError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    if FAILED_JOBS:
        print(f"error: {len(FAILED_JOBS)} job(s) failed; see FAILED in each job folder", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
