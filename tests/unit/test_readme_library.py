"""The README's library example runs exactly as written."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_library_example_runs_as_written():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## The library") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md: The library", "exec"), namespace)
    mask, model = namespace["mask"], namespace["model"]
    assert mask.n_pruned > 0
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    handle = namespace["masking"].apply(model, mask)  # the example restored it: applying again zeroes the mask
    name, idx = next((n, i) for n, i in mask.indices.items() if i.numel())
    weight = dict(model.named_modules())[name].weight
    assert torch.all(weight.detach().reshape(-1)[idx] == 0)
    namespace["masking"].restore(model, handle)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
