"""Small plotting helpers shared by the sweep reports (matplotlib, headless)."""

from __future__ import annotations


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def annotated_heatmap(fig, ax, grid, rows: list[str], cols: list[str], xlabel: str, ylabel: str, **imshow) -> None:
    """`grid` (NaN = n/a) as a heat map with each cell's value written in it and a colour bar."""
    import numpy as np

    color = imshow.pop("text_color", "w")
    im = ax.imshow(grid, aspect="auto", **imshow)
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(len(cols)), cols, rotation=25, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax)
