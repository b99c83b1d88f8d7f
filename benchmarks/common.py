"""Shared by the benchmark scripts."""

from __future__ import annotations

import json
from pathlib import Path


def emit(result: dict, json_path: str | None, digits: int | None = None) -> None:
    """Print the result as JSON (top-level floats to `digits` significant digits) and write it to `json_path`."""
    if digits:
        result = {k: float(f"{v:.{digits}g}") if isinstance(v, float) else v for k, v in result.items()}
    text = json.dumps(result, indent=2)
    print(text)
    if json_path:
        Path(json_path).write_text(text + "\n")
