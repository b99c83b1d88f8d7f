"""The Session: what a process keeps between jobs, bounded, and never carried to another process."""

import torch

from harmcore.core.selection import set_difference


def test_sweep_caches_are_bounded():
    """A sweep over many harm sets keeps a bounded number of selectors (each holds model-sized
    score references), and the one it reuses gives the same mask as a fresh set difference."""
    from types import SimpleNamespace

    from harmcore.run.context import JobContext
    from harmcore.run.scores import select
    from harmcore.run.session import MAX_SELECTORS, Session, remember

    gen = torch.Generator().manual_seed(0)
    preserve = {"a": torch.rand(8, 8, generator=gen)}
    cfg = SimpleNamespace(pruning=SimpleNamespace(p=0.2, ranking="per_matrix"), sparsity=0.1)
    ctx = JobContext(cfg, Session(), None)
    harms = [{"a": torch.rand(8, 8, generator=gen)} for _ in range(5)]
    for harm in harms:
        got = select(ctx, harm, preserve)
        want = set_difference(harm, preserve, q=0.1, p=0.2, ranking="per_matrix")
        assert torch.equal(got.indices["a"], want.indices["a"]) and got.n_pruned > 0
        assert len(ctx.session.selectors) <= MAX_SELECTORS
    kept = [sel.harm for sel in ctx.session.selectors.values()]
    assert kept[-1] is harms[-1] and all(h is not harms[0] for h in kept)

    store = {}
    for i in range(5):
        remember(store, i, str(i), limit=3)
    assert list(store) == [2, 3, 4]
    remember(store, 2, "again", limit=3)
    assert list(store) == [3, 4, 2]


def test_a_curve_prepares_its_selector_for_the_largest_q():
    """select(q_max=...) prepares the sorted candidates once; each point's mask equals a fresh one."""
    from types import SimpleNamespace

    from harmcore.run.context import JobContext
    from harmcore.run.scores import select
    from harmcore.run.session import Session

    gen = torch.Generator().manual_seed(1)
    harm = {"a": torch.rand(16, 16, generator=gen)}
    preserve = {"a": torch.rand(16, 16, generator=gen)}
    session = Session()
    for q in (0.01, 0.04, 0.02):
        cfg = SimpleNamespace(pruning=SimpleNamespace(p=0.1, ranking="per_matrix"), sparsity=q)
        got = select(JobContext(cfg, session, None), harm, preserve, q_max=0.04)
        assert torch.equal(got.indices["a"], set_difference(harm, preserve, q, 0.1).indices["a"])
    (sel,) = session.selectors.values()
    assert sel.prepared_q == 0.04


def test_a_session_pickles_as_an_empty_one():
    """submitit pickles the entry point (and its session) into each resubmission: no model goes with it."""
    import pickle

    from harmcore.run.session import Session

    session = Session()
    session.scores["x"] = {"a": torch.ones(3)}
    session.measure["judge"] = object()
    again = pickle.loads(pickle.dumps(session))
    assert isinstance(again, Session) and again.scores == {} and again.measure == {}
