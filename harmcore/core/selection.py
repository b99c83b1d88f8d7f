"""Set-difference selection: prune the top-q harm weights that are not top-p benign weights.

For each ranking unit U (a matrix, the whole model, or one output row):
T_harm = top floor(q * |U|) by harm score, T_benign = top floor(p * |U|) by preserve score,
prune T_harm minus T_benign. Ties at the cut are broken by lower flat index first, so
the result is deterministic. `preserve=None` means plain top-q.

- `per_matrix` (default; what the released code does) ranks inside each weight matrix.
- `global` ranks all prunable weights together, with exact top-k found by threshold
  search instead of a sort of every weight at once.
- `per_row` ranks inside each output row (Wanda-style); floor(q * in_features) may be 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harmcore.core.matrices import first_nonfinite, per_matrix
from harmcore.errors import HarmcoreError

RANKINGS = ("per_matrix", "global", "per_row")


@dataclass
class Mask:
    """Weights to zero: flat indices into `weight.flatten()` per module name.

    `numel` holds the size of every prunable matrix (also those with nothing pruned), so
    achieved sparsity is pruned weights / all prunable weights.
    """

    indices: dict[str, torch.Tensor]  # name -> sorted int64 flat indices (CPU)
    numel: dict[str, int]
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def n_pruned(self) -> int:
        return int(sum(int(i.numel()) for i in self.indices.values()))

    @property
    def n_total(self) -> int:
        return int(sum(self.numel.values()))

    @property
    def sparsity(self) -> float:
        """Achieved sparsity: pruned weights / all prunable weights."""
        return self.n_pruned / self.n_total if self.n_total else 0.0

    def intersect(self, other: Mask) -> Mask:
        """Weights pruned by both masks (e.g. shared across harm domains)."""
        out = {}
        for name, idx in self.indices.items():
            if name in other.indices:
                common = idx[torch.isin(idx, other.indices[name])]
                if common.numel():
                    out[name] = common
        return Mask(out, dict(self.numel), {"op": "intersection"})

    def union(self, other: Mask) -> Mask:
        out = dict(self.indices)
        for name, idx in other.indices.items():
            out[name] = torch.unique(torch.cat([out[name], idx])) if name in out else idx
        return Mask(out, {**other.numel, **self.numel}, {"op": "union"})


def _check_fraction(name: str, value: float) -> None:
    if not (0.0 <= float(value) < 1.0):
        raise HarmcoreError(f"{name}={value} is outside [0, 1): it is a fraction of weights, e.g. 1e-5")


def _check_scores(scores: dict[str, torch.Tensor], what: str) -> None:
    if not scores:
        raise HarmcoreError(f"{what} scores are empty: nothing to select from")
    name = first_nonfinite(scores)
    if name is not None:
        raise HarmcoreError(f"{what} scores of {name} contain NaN or inf: recompute them (float32 model)")


def _order_key(x: torch.Tensor) -> torch.Tensor:
    """Map float32 values to int32 keys with the same order (for exact threshold search).

    IEEE floats of one sign order like their bit patterns; flipping the magnitude bits of
    negative values makes the signed-integer order match the float order everywhere.
    """
    bits = x.float().contiguous().view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


# Up to this many candidate values, the global threshold comes from one topk over
# per-matrix candidates; above it, from a radix select over the keys.
_CANDIDATE_BUDGET = 1 << 24


def _topk_flat(s: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest entries of a flat tensor; ties go to lower indices."""
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=s.device)
    if k >= s.numel():
        return torch.arange(s.numel(), device=s.device)
    # Exact with deterministic ties: threshold = k-th largest; take all above, then
    # the lowest-index entries equal to it.
    kth = torch.topk(s, k, sorted=False).values.min()
    above = torch.nonzero(s > kth).flatten()
    ties = torch.nonzero(s == kth).flatten()[: k - above.numel()]
    return torch.cat([above, ties]).sort().values


def _kth_largest_key(keys: dict[str, torch.Tensor], k: int) -> int:
    """The k-th largest of int32 order keys spread over many tensors: a radix select.

    Two counting passes, each a histogram of 16 bits of the key (offset to unsigned): the
    high half picks the bucket that holds the k-th largest, the low half of that bucket's
    keys the exact value.
    """

    def unsigned(t: torch.Tensor) -> torch.Tensor:
        return t.to(torch.int64) + (1 << 31)

    def hist(values: torch.Tensor) -> torch.Tensor:
        return torch.bincount(values, minlength=1 << 16)

    def bucket(counts: torch.Tensor, k: int) -> tuple[int, int]:
        """The bucket holding the k-th largest and how many of the k lie above it."""
        above = torch.cumsum(counts.flip(0), 0)  # above[i]: keys in the top i + 1 buckets
        i = int(torch.searchsorted(above, torch.tensor(k, dtype=above.dtype)))
        return (1 << 16) - 1 - i, int(above[i - 1]) if i else 0

    high = sum(per_matrix(lambda t: hist(unsigned(t) >> 16), keys).values())
    hi, n_above = bucket(high, k)

    def low_of_bucket(t: torch.Tensor) -> torch.Tensor:
        u = unsigned(t)
        return hist(u[(u >> 16) == hi] & 0xFFFF)

    lo, _ = bucket(sum(per_matrix(low_of_bucket, keys).values()), k - n_above)
    return ((hi << 16) | lo) - (1 << 31)


def _global_topk(scores: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Exact global top-k over all matrices without concatenating or sorting them.

    The k-th largest value is found on order-preserving integer keys: from per-matrix
    candidates when k is small, else by a radix select (two counting passes).
    """
    names = list(scores)
    if k <= 0:
        return {n: torch.empty(0, dtype=torch.long) for n in names}
    total = sum(s.numel() for s in scores.values())
    if k >= total:
        return {n: torch.arange(scores[n].numel()) for n in names}
    keys = {n: _order_key(scores[n].reshape(-1)) for n in names}

    def count_ge(t: int) -> int:
        if t > (1 << 31) - 1:
            return 0
        return int(sum(int((keys[n] >= t).sum()) for n in names))

    if sum(min(k, t.numel()) for t in keys.values()) <= _CANDIDATE_BUDGET:
        # A matrix contributes at most its own top-k to the global top-k, so the global
        # k-th largest key is the k-th largest among these candidates.
        cand = torch.cat(
            list(per_matrix(lambda t: torch.topk(t, min(k, t.numel()), sorted=False).values, keys).values())
        )
        threshold = int(torch.topk(cand, k, sorted=False).values.min())
    else:
        threshold = _kth_largest_key(keys, k)
    out, remaining = {}, k - count_ge(threshold + 1)
    for n in names:  # ties at the threshold go to earlier matrices, then lower indices
        above = torch.nonzero(keys[n] > threshold).flatten()
        ties = torch.nonzero(keys[n] == threshold).flatten()[: max(remaining, 0)]
        remaining -= ties.numel()
        out[n] = torch.cat([above, ties]).sort().values
    return out


def _per_row_topk(s: torch.Tensor, frac: float) -> torch.Tensor:
    """Each row's top floor(frac * cols); ties at a row's cut go to lower columns (as every ranking)."""
    rows, cols = s.shape
    k = int(frac * cols)
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=s.device)
    if k >= cols:
        return torch.arange(s.numel(), device=s.device)
    kth = torch.topk(s, k, dim=1).values[:, -1:]  # each row's k-th largest value
    above, ties = s > kth, s == kth
    wanted = k - above.sum(dim=1, keepdim=True)  # ties each row takes
    if bool((ties.sum(dim=1, keepdim=True) > wanted).any()):  # more ties than places: lower columns first
        ties &= torch.cumsum(ties.to(torch.int32), dim=1) <= wanted
    return torch.nonzero((above | ties).reshape(-1)).flatten()


def _top(scores: dict[str, torch.Tensor], frac: float, ranking: str) -> dict[str, torch.Tensor]:
    if ranking == "global":
        k = int(frac * sum(s.numel() for s in scores.values()))
        return _global_topk(scores, k)
    if ranking == "per_row":
        return {n: _per_row_topk(s.reshape(s.shape[0], -1), frac) for n, s in scores.items()}
    return per_matrix(lambda s: _topk_flat(s.reshape(-1), int(frac * s.numel())), scores)


class SetDifference:
    """Set-difference masks for many q over the same scores (the points of a sweep).

    The scores are checked and the preserve top-p is selected once. After `prepare(q_max)`,
    each matrix's top floor(q_max * numel) harm scores are kept sorted (per-matrix ranking), so
    every q <= q_max is read off a prefix instead of another pass over all scores; the result
    is identical to `set_difference` (same tie rule), which a full pass still computes when ties
    at the cut reach past the kept prefix.
    """

    def __init__(self, harm, preserve=None, p: float = 0.0, ranking: str = "per_matrix"):
        _check_fraction("p", p)
        if ranking not in RANKINGS:
            raise HarmcoreError(f"unknown ranking {ranking!r}: use one of {', '.join(RANKINGS)}")
        _check_scores(harm, "harm")
        if preserve is not None:
            _check_scores(preserve, "preserve")
            missing = set(harm) - set(preserve)
            if missing:
                raise HarmcoreError(f"preserve scores lack {len(missing)} matrices (e.g. {sorted(missing)[0]})")
            for n in harm:
                if harm[n].shape != preserve[n].shape:
                    raise HarmcoreError(f"harm and preserve scores of {n} differ in shape")
        self.harm, self.preserve, self.p, self.ranking = harm, preserve, p, ranking
        with torch.no_grad():
            use = preserve is not None and p > 0
            self.keep = _top({n: preserve[n] for n in harm}, p, ranking) if use else {}
        self.prepared_q = 0.0
        self._sorted: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def prepare(self, q_max: float) -> None:
        """Keep each matrix's top floor(q_max * numel) harm scores sorted (per-matrix ranking only)."""
        _check_fraction("q (sparsity)", q_max)
        if self.ranking != "per_matrix" or q_max <= self.prepared_q:
            return

        def top(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # one past the largest cut, so that a tie at the cut shows (and only then costs a full pass)
            k = min(int(q_max * s.numel()) + 1, s.numel())
            with torch.no_grad():
                values, indices = torch.topk(s.reshape(-1), k, sorted=True)
            return values, indices

        self._sorted = per_matrix(top, self.harm)
        self.prepared_q = q_max

    def _prefix_topk(self, n: str, k: int) -> torch.Tensor:
        s = self.harm[n].reshape(-1)
        values, idx = self._sorted[n]
        if k <= 0:
            return torch.empty(0, dtype=torch.long, device=s.device)
        if k >= s.numel():
            return torch.arange(s.numel(), device=s.device)
        kth = values[k - 1]
        if values.numel() < s.numel() and values[-1] == kth:  # ties may continue past the kept prefix
            return _topk_flat(s, k)
        above = idx[:k][values[:k] > kth]
        ties = idx[values == kth].sort().values[: k - above.numel()]  # lower indices first, as _topk_flat
        return torch.cat([above, ties]).sort().values

    def mask(self, q: float) -> Mask:
        _check_fraction("q (sparsity)", q)
        with torch.no_grad():
            if self._sorted and q <= self.prepared_q:
                harm_top = {n: self._prefix_topk(n, int(q * s.numel())) for n, s in self.harm.items()}
            else:
                harm_top = _top(self.harm, q, self.ranking)
            indices = {}
            for n, idx in harm_top.items():
                if n in self.keep and self.keep[n].numel():
                    idx = idx[~torch.isin(idx, self.keep[n])]
                if idx.numel():
                    indices[n] = idx.to("cpu", torch.long)
        meta = {"q": repr(float(q)), "p": repr(float(self.p)), "ranking": self.ranking}
        return Mask(indices, {n: int(s.numel()) for n, s in self.harm.items()}, meta)


def set_difference(
    harm: dict[str, torch.Tensor],
    preserve: dict[str, torch.Tensor] | None,
    q: float,
    p: float = 0.0,
    ranking: str = "per_matrix",
) -> Mask:
    """Mask of top-q harm weights minus top-p preserve weights (fractions per ranking unit)."""
    _check_fraction("q (sparsity)", q)
    return SetDifference(harm, preserve, p, ranking).mask(q)
