"""Integration fixtures: one real vLLM server (tiny_random, CPU) per test session."""

import os
from pathlib import Path

import pytest

from harmcore.generation.server import vllm_server
from harmcore.models.builders import build


@pytest.fixture(scope="session")
def served_tiny(tmp_path_factory):
    """A real OpenAI-compatible vLLM server for the tiny random model (~30-60 s to start on 2 cores)."""
    model_dir = build("tiny_random", Path(os.environ["HARMCORE_CACHE"]))
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    # The byte-level tiny model needs ~2.7k tokens for the rubric prompt: allow more than its
    # configured 1024 positions (RoPE extends; the model is random anyway).
    env = {"VLLM_LOGGING_LEVEL": "WARNING", "VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"}
    with vllm_server(model_dir, max_model_len=4096, log_path=log, env=env) as server:
        yield server
