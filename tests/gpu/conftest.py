"""The gpu tier: the same checks as on CPU, on CUDA (`python -m pytest -m gpu tests/gpu`).

Every test here is marked `gpu` and skipped, with the reason, where torch sees no CUDA device:
these machines have none. docs/testing.md records the last run on a GPU.
"""

import pytest
import torch

REASON = "needs a CUDA device (torch.cuda.is_available() is False here)"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/gpu/" in str(item.fspath):
            item.add_marker(pytest.mark.gpu)
            if not torch.cuda.is_available():
                item.add_marker(pytest.mark.skip(reason=REASON))
