"""Helpers over {name: tensor} dicts with one entry per prunable matrix (scores, weights).

Kept free of other harmcore imports: scoring, selection and the score cache all use them.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch


def per_matrix(fn: Callable, tensors: dict[str, torch.Tensor]) -> dict:
    """{name: fn(tensor)}; CPU tensors are spread over torch's threads (a 1-D topk or a flat
    reduction runs on one core, so matrices in parallel use them all); others run in order."""
    workers = torch.get_num_threads()
    if workers < 2 or len(tensors) < 2 or any(t.device.type != "cpu" for t in tensors.values()):
        return {n: fn(t) for n, t in tensors.items()}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(tensors, pool.map(fn, tensors.values())))


def all_finite(t: torch.Tensor) -> bool:
    """Whether every entry is finite: a finite sum proves it (NaN or inf anywhere makes the sum NaN or
    inf); only a sum that is not finite (possibly an overflow of finite values) needs the full check."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def first_nonfinite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first tensor holding a NaN or an inf, None when every entry is finite."""
    return next((name for name, ok in per_matrix(all_finite, tensors).items() if not ok), None)
