"""Where a mask's pruned weights are: counts per decoder layer x module type.

A prunable linear is named like ``model.layers.<i>.self_attn.q_proj``: its layer is the
last integer component of the name (the index in the decoder block list) and its module
type the last component (``q_proj`` -> column ``q``). Known Llama-style types come in
the order q, k, v, o, gate, up, down; any other type is appended alphabetically.

`write` puts three files next to a mask (`write_in_background` draws the PNG on a worker
thread while the job goes on):

- ``locations.csv``: one row per layer, one column per module type, cells = number of
  pruned weights (integers), plus a ``total`` column (per layer) and a last ``total`` row.
- ``locations.json``: the same counts, and the fraction of each cell's weights pruned.
- ``locations.png``: a heat map of the counts (layers down, module types across).
"""

from __future__ import annotations

import csv
import io
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harmcore.core import masking
from harmcore.core.selection import Mask
from harmcore.errors import HarmcoreError
from harmcore.files import atomic_write_figure, atomic_write_json, atomic_write_text

MODULE_ORDER = ("q", "k", "v", "o", "gate", "up", "down")
_INT = re.compile(r"^\d+$")


def parse_name(name: str) -> tuple[int, str]:
    """(layer index, short module type) of a prunable linear's name, e.g. (3, "q") for ...layers.3.self_attn.q_proj."""
    parts = name.split(".")
    layers = [int(p) for p in parts[:-1] if _INT.match(p)]
    if not layers:
        raise HarmcoreError(
            f"mask entry {name!r} has no layer index in its name: expected e.g. model.layers.0.mlp.up_proj"
        )
    module = parts[-1]
    return layers[-1], module[: -len("_proj")] if module.endswith("_proj") else module


@dataclass
class LocationTable:
    """Pruned-weight counts and matrix sizes per (layer, module type)."""

    layers: list[int]
    modules: list[str]
    counts: dict[tuple[int, str], int]  # pruned weights
    numel: dict[tuple[int, str], int]  # all weights of the matrices in that cell

    def count(self, layer: int, module: str) -> int:
        return self.counts.get((layer, module), 0)

    def fraction(self, layer: int, module: str) -> float:
        n = self.numel.get((layer, module), 0)
        return self.count(layer, module) / n if n else 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def table(mask: Mask) -> LocationTable:
    """Count a mask's pruned weights per (layer, module type); every prunable matrix gets a cell, pruned or not."""
    counts: dict[tuple[int, str], int] = {}
    numel: dict[tuple[int, str], int] = {}
    for name in set(mask.numel) | set(mask.indices):
        cell = parse_name(name)
        numel[cell] = numel.get(cell, 0) + int(mask.numel.get(name, 0))
        idx = mask.indices.get(name)
        counts[cell] = counts.get(cell, 0) + (int(idx.numel()) if idx is not None else 0)
    found = {m for _, m in numel}
    modules = [m for m in MODULE_ORDER if m in found] + sorted(found - set(MODULE_ORDER))
    return LocationTable(sorted({layer for layer, _ in numel}), modules, counts, numel)


def to_csv(t: LocationTable) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["layer", *t.modules, "total"])
    for layer in t.layers:
        row = [t.count(layer, m) for m in t.modules]
        w.writerow([layer, *row, sum(row)])
    col_totals = [sum(t.count(layer, m) for layer in t.layers) for m in t.modules]
    w.writerow(["total", *col_totals, sum(col_totals)])
    return buf.getvalue()


def plot(t: LocationTable, path: Path, title: str = "") -> None:
    """Heat map of pruned-weight counts (cells annotated with their counts on small grids)."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: its global figure registry is not for threads

    grid = np.array([[t.count(layer, m) for m in t.modules] for layer in t.layers], dtype=float)
    fig = Figure(figsize=(1.0 + 0.8 * len(t.modules), 1.2 + 0.32 * len(t.layers)))
    ax = fig.subplots()
    im = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(t.modules)), t.modules)
    ax.set_yticks(range(len(t.layers)), [str(x) for x in t.layers])
    ax.set_xlabel("module")
    ax.set_ylabel("layer")
    ax.set_title(title or f"pruned weights ({t.total} in all)", fontsize=9)
    if grid.size <= 64:  # small grids only: text in every cell triples the render time (the CSV has the counts)
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=7, color="w" if v < grid.max() / 2 else "k")
    fig.colorbar(im, ax=ax, label="pruned weights")
    fig.tight_layout()
    atomic_write_figure(path, fig)


def write(mask: Mask, out_dir, title: str = "") -> LocationTable:
    """Write locations.csv, locations.json and locations.png for `mask` into `out_dir` (atomic)."""
    t = _write_counts(mask, Path(out_dir))
    plot(t, Path(out_dir) / "locations.png", title)
    return t


_drawer: ThreadPoolExecutor | None = None
_drawer_lock = threading.Lock()


def write_in_background(mask: Mask, out_dir, title: str = "") -> Future:
    """`write`, with the heat map drawn on a worker thread; the future gives the table once it is written.

    The counts are written before this returns. One worker per process draws the figures one at
    a time, off the job's critical path (about 0.2-0.5 s per point on CPU; on a GPU the CPU is
    otherwise idle while it generates). Wait on the future before calling the job finished.
    """
    global _drawer
    t = _write_counts(mask, Path(out_dir))

    def draw() -> LocationTable:
        plot(t, Path(out_dir) / "locations.png", title)
        return t

    with _drawer_lock:
        if _drawer is None:
            _drawer = ThreadPoolExecutor(1, thread_name_prefix="harmcore-locations")
    return _drawer.submit(draw)


def _write_counts(mask: Mask, out_dir: Path) -> LocationTable:
    t = table(mask)
    atomic_write_text(out_dir / "locations.csv", to_csv(t))
    atomic_write_json(
        out_dir / "locations.json",
        {
            "modules": t.modules,
            "layers": t.layers,
            "counts": [[t.count(layer, m) for m in t.modules] for layer in t.layers],
            "fraction": [[t.fraction(layer, m) for m in t.modules] for layer in t.layers],
            "n_pruned": t.total,
        },
    )
    return t


def write_for_job(job_dir) -> bool:
    """Render a job folder's mask.safetensors into locations.* unless they are there; False without a mask."""
    job_dir = Path(job_dir)
    if not (job_dir / "mask.safetensors").exists():
        return False
    if not (job_dir / "locations.png").exists() or not (job_dir / "locations.csv").exists():
        write(masking.load(job_dir / "mask.safetensors"), job_dir, title=job_dir.name)
    return True
