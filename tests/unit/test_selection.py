import pytest
import torch

from harmcore.core.selection import _global_topk, set_difference
from harmcore.errors import HarmcoreError


def idx(mask, name):
    return mask.indices.get(name, torch.empty(0, dtype=torch.long)).tolist()


@pytest.fixture
def scores():
    harm = {
        "a": torch.tensor([[9.0, 1.0, 8.0, 0.0], [7.0, 2.0, 3.0, 6.0]]),  # 8 weights
        "b": torch.tensor([[5.0, 4.0], [10.0, -1.0]]),  # 4 weights
    }
    preserve = {
        "a": torch.tensor([[0.0, 0.0, 5.0, 0.0], [0.0, 0.0, 0.0, 1.0]]),
        "b": torch.tensor([[0.0, 0.0], [9.0, 0.0]]),
    }
    return harm, preserve


def test_per_matrix_hand_computed(scores):
    harm, preserve = scores
    # q=0.5: a keeps floor(4) top -> {0 (9), 2 (8), 4 (7), 7 (6)}; b floor(2) -> {2 (10), 0 (5)}
    m = set_difference(harm, None, q=0.5)
    assert idx(m, "a") == [0, 2, 4, 7] and idx(m, "b") == [0, 2]
    # p=0.25: a protects floor(2) -> {2, 7}; b protects floor(1) -> {2}
    m = set_difference(harm, preserve, q=0.5, p=0.25)
    assert idx(m, "a") == [0, 4] and idx(m, "b") == [0]
    assert m.n_pruned == 3 and m.n_total == 12 and m.sparsity == pytest.approx(3 / 12)


def test_global_hand_computed(scores):
    harm, preserve = scores
    # floor(0.25 * 12) = 3 largest overall: b[2]=10, a[0]=9, a[2]=8
    m = set_difference(harm, None, q=0.25, ranking="global")
    assert idx(m, "a") == [0, 2] and idx(m, "b") == [2]
    # preserve floor(0.1*12)=1 overall: a[2]=5 is not the largest, b[2]=9 is
    m = set_difference(harm, preserve, q=0.25, p=0.1, ranking="global")
    assert idx(m, "a") == [0, 2] and idx(m, "b") == []


def test_per_row_hand_computed(scores):
    harm, _ = scores
    # a rows have 4 columns: floor(0.5*4)=2 per row -> row0 {0,2}, row1 {4,7}; b: 1 per row -> {0},{2}
    m = set_difference(harm, None, q=0.5, ranking="per_row")
    assert idx(m, "a") == [0, 2, 4, 7] and idx(m, "b") == [0, 2]
    # floor(0.2*2)=0 per row in b: nothing there
    m = set_difference(harm, None, q=0.3, ranking="per_row")
    assert idx(m, "a") == [0, 4] and idx(m, "b") == []


@pytest.mark.parametrize("ranking", ["per_matrix", "global", "per_row"])
def test_q_zero_prunes_nothing(scores, ranking):
    harm, preserve = scores
    m = set_difference(harm, preserve, q=0.0, p=0.5, ranking=ranking)
    assert m.n_pruned == 0 and m.sparsity == 0.0 and m.n_total == 12


def test_ties_are_deterministic():
    harm = {"a": torch.ones(10)}
    m = set_difference(harm, None, q=0.3)
    assert idx(m, "a") == [0, 1, 2]
    g = set_difference({"a": torch.ones(4), "b": torch.ones(4)}, None, q=0.5, ranking="global")
    assert idx(g, "a") == [0, 1, 2, 3] and idx(g, "b") == []


def test_global_topk_matches_sort_on_random_data():
    gen = torch.Generator().manual_seed(0)
    scores = {f"m{i}": torch.randn(37, 23, generator=gen) * (i + 1) for i in range(5)}
    scores["m0"][0, :5] = -0.0  # signed zeros and negatives must order correctly
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    for k in [1, 17, 500, flat.numel() - 1]:
        got = _global_topk(scores, k)
        chosen = torch.cat([scores[n].reshape(-1)[got[n]] for n in scores])
        assert chosen.numel() == k
        assert torch.equal(chosen.sort().values, flat.sort(descending=True).values[:k].sort().values)


def test_achieved_sparsity_exact():
    harm = {"a": torch.arange(1000.0), "b": torch.arange(300.0)}
    m = set_difference(harm, None, q=0.01)
    assert m.n_pruned == 10 + 3 and m.sparsity == 13 / 1300
    assert idx(m, "a") == list(range(990, 1000))


@pytest.mark.parametrize("q,p", [(-0.1, 0.0), (1.0, 0.0), (0.1, 1.5), (0.1, -1e-9)])
def test_fractions_out_of_range(scores, q, p):
    harm, preserve = scores
    with pytest.raises(HarmcoreError, match=r"outside \[0, 1\)"):
        set_difference(harm, preserve, q=q, p=p)


def test_nan_scores_rejected(scores):
    harm, preserve = scores
    harm["a"][0, 0] = float("nan")
    with pytest.raises(HarmcoreError, match="NaN or inf"):
        set_difference(harm, preserve, q=0.1)
    preserve["b"][0, 0] = float("inf")
    with pytest.raises(HarmcoreError, match="NaN or inf"):
        set_difference({"a": torch.ones(2, 4), "b": torch.ones(2, 2)}, preserve, q=0.1)


def test_finiteness_check_is_exact_when_the_sum_overflows():
    from harmcore.core.matrices import all_finite

    big = torch.full((4,), 3e38)  # every entry finite, the float32 sum is inf
    assert torch.isinf(big.sum()) and all_finite(big)
    for bad in (float("nan"), float("inf"), float("-inf")):
        x = big.clone()
        x[2] = bad
        assert not all_finite(x)
    both = torch.tensor([float("inf"), float("-inf"), 1.0])  # sums to NaN
    assert not all_finite(both) and all_finite(torch.zeros(3))


def test_matrices_in_parallel_give_what_one_thread_gives(monkeypatch):
    from harmcore.core.matrices import per_matrix
    from harmcore.core.selection import SetDifference

    gen = torch.Generator().manual_seed(3)
    harm = {f"m{i}": torch.randint(0, 20, (30, 40), generator=gen).float() for i in range(6)}  # many ties
    preserve = {n: torch.randn(t.shape, generator=gen) for n, t in harm.items()}
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # the thread-pool path, whatever the machine
    assert per_matrix(lambda t: t.sum(), harm) == {n: t.sum() for n, t in harm.items()}
    parallel = SetDifference(harm, preserve, p=0.05)
    parallel.prepare(0.1)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    serial = SetDifference(harm, preserve, p=0.05)
    serial.prepare(0.1)
    for q in (0.01, 0.05, 0.1, 0.2):
        a, b = parallel.mask(q), serial.mask(q)
        assert a.indices.keys() == b.indices.keys() and all(torch.equal(a.indices[n], b.indices[n]) for n in a.indices)


def test_unknown_ranking(scores):
    with pytest.raises(HarmcoreError, match="per_matrix"):
        set_difference(scores[0], None, q=0.1, ranking="perrow")


def test_mask_intersection_and_union():
    m1 = set_difference({"a": torch.arange(10.0)}, None, q=0.5)  # 5..9
    m2 = set_difference({"a": -torch.arange(10.0) + 7}, None, q=0.5)  # 0..4
    m3 = set_difference({"a": torch.tensor([0, 0, 0, 0, 5, 9, 0, 0, 0, 0.0])}, None, q=0.2)  # 4,5
    assert m1.intersect(m2).n_pruned == 0
    assert m1.intersect(m3).indices["a"].tolist() == [5]
    assert m2.union(m3).indices["a"].tolist() == [0, 1, 2, 3, 4, 5]


def test_per_row_fast_path_matches_full_sort():
    gen = torch.Generator().manual_seed(1)
    scores = {"w": torch.randn(16, 400, generator=gen)}
    got = idx(set_difference(scores, None, q=0.02, ranking="per_row"), "w")  # k = 8 per row: topk path
    order = torch.sort(scores["w"], dim=1, descending=True).indices[:, :8]
    want = (order + torch.arange(16).unsqueeze(1) * 400).reshape(-1).sort().values.tolist()
    assert got == want


def test_global_topk_search_and_candidate_paths_agree(monkeypatch):
    import harmcore.core.selection as sel

    gen = torch.Generator().manual_seed(2)
    ties = {f"m{i}": torch.randn(50, 30, generator=gen).round(decimals=1) for i in range(4)}
    # values that share their high 16 bits and differ in the low ones, of both signs, and zeros
    close = {f"m{i}": (1.0 + torch.randint(0, 300, (40, 20), generator=gen) * 2e-7) for i in range(3)}
    close["neg"] = -close.pop("m2")
    close["zero"] = torch.zeros(10, 10)
    for scores in (ties, close):
        flat = torch.cat([s.reshape(-1) for s in scores.values()])
        for k in (1, 7, 300, flat.numel() - 1):
            fast = _global_topk(scores, k)
            monkeypatch.setattr(sel, "_CANDIDATE_BUDGET", 0)
            slow = _global_topk(scores, k)
            monkeypatch.undo()
            assert all(torch.equal(fast[n], slow[n]) for n in scores)
            assert sum(v.numel() for v in fast.values()) == k
            picked = torch.cat([scores[n].reshape(-1)[slow[n]] for n in scores])
            assert picked.min() == flat.sort(descending=True).values[k - 1]  # the k-th largest is the cut


@pytest.mark.parametrize("levels", [3, 50, None])  # few distinct values (many ties at the cut) .. continuous
def test_sweep_selector_equals_one_set_difference_per_q(levels):
    from harmcore.core.selection import SetDifference

    gen = torch.Generator().manual_seed(levels or 0)

    def draw(shape):
        x = torch.randn(shape, generator=gen)
        return x if levels is None else torch.randint(0, levels, shape, generator=gen).float()

    harm = {"a": draw((40, 30)), "b": draw((7, 13)), "c": draw((500,))}
    preserve = {n: draw(t.shape) for n, t in harm.items()}
    grid = [0.0, 0.001, 0.01, 0.05, 0.1, 0.3]
    sweep = SetDifference(harm, preserve, p=0.05)
    sweep.prepare(max(grid))
    for q in grid:
        fast, one = sweep.mask(q), set_difference(harm, preserve, q, 0.05)
        assert fast.indices.keys() == one.indices.keys()
        assert all(torch.equal(fast.indices[n], one.indices[n]) for n in one.indices), q
    beyond = sweep.mask(0.5)  # above the prepared q: a full pass, still the same mask
    assert all(torch.equal(beyond.indices[n], v) for n, v in set_difference(harm, preserve, 0.5, 0.05).indices.items())


def test_stage_seconds_add_up_when_a_stage_runs_twice(tmp_path):
    from harmcore.run.stages import Stages

    log = Stages(tmp_path)
    log.record("vllm_engine", "started", 1.5)
    log.record("vllm_engine", "started", 2.25)
    assert log.seconds["vllm_engine"] == 3.75 and log.status["vllm_engine"] == "started"


def test_a_stage_started_inside_a_cached_stage_is_counted_once(tmp_path, monkeypatch):
    """A stage started inside another one's compute (an engine started for a generation) counts once:
    the outer stage's seconds leave out the inner one's (a clock that moves only when told)."""
    import time

    from harmcore.run.stages import Stages

    clock = [100.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    log = Stages(tmp_path)

    def compute():
        start = time.perf_counter()
        clock[0] += 4.0  # an engine started for this stage
        log.record("vllm_engine", "started", time.perf_counter() - start)
        clock[0] += 0.5  # the generation itself
        return [1]

    assert log.cached("kind", {"a": 1}, compute, "generations") == [1]
    assert log.seconds == {"vllm_engine": 4.0, "generations": 0.5}
