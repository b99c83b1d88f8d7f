"""Generation: one interface (`base.Generator`) over two backends.

    base.py          Request, Sampling, the Generator protocol, the exact prompt text/ids
    hf.py            HFGenerator: transformers generate on the live (masked) model
    vllm_engine.py   VLLMGenerator: one vLLM engine per model, masks swapped in place
    vllm_worker.py   the worker extension that reloads the swapped weights inside vLLM
    server.py        vLLM's OpenAI-compatible server as a subprocess (judges, tests)

May import: errors, files, data, core. Never measure, report or run.
"""
