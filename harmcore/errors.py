"""User-facing errors: one line that names the bad value and the fix."""


class HarmcoreError(Exception):
    """An error caused by user input or environment, reported without a traceback."""
