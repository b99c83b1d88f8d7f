"""User-facing errors: one line that names the bad value and the fix."""


class HarmcoreError(Exception):
    """An error caused by user input or environment, reported without a traceback."""

    # False for errors about a folder that belongs to another run: no FAILED marker is written there
    marks_job_dir: bool = True
