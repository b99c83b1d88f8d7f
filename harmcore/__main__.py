"""`python -m harmcore ...` is the `harmcore` command."""

from harmcore.run.console import main

main()
