"""`--help` for every command, built from the conf/ folder without importing torch or Hydra."""

from __future__ import annotations

from pathlib import Path

from harmcore.run.argv import CONF_DIR, options

USAGE = {
    "run": (
        "harmcore run [-m] [overrides]",
        "Score, prune and measure one job; with -m (anywhere on the line) a sweep, one job per combination.",
        [
            "harmcore run                                          # the embedded default model, offline, minutes",
            "harmcore run model=llama3_instruct scorer=wanda -m sparsity=0.001,0.01",
            "harmcore run -m model=tiny_random sparsity=0,1e-3,1e-2 hydra/launcher=local_slurm",
            "harmcore run experiment=compression_pairs             # an experiment file carries its own sweep",
            "harmcore run --cfg job model=qwen25_7b_instruct       # print the composed config",
            "harmcore run --config-dir ~/harmcore-conf model=my_model   # your own options join these",
        ],
    ),
    "generate-data": (
        "harmcore generate-data [overrides]",
        "Write calibration files (harmful.jsonl, benign.jsonl, with provenance) for a model and harm domain.",
        [
            "harmcore generate-data model=llama3_instruct harm_domain=advbench",
            "harmcore generate-data model=llama3_base datagen.method=prefill datagen.reference_path=FILE",
        ],
    ),
    "finetune-em": (
        "harmcore finetune-em [overrides] [out_dir=DIR]",
        "Emergent misalignment: narrow LoRA fine-tuning with and without pruning, judged through an endpoint.",
        ["harmcore finetune-em model=smollm2_135m_instruct eval.endpoint.base_url=http://127.0.0.1:8000/v1"],
    ),
    "aggregate": (
        "harmcore aggregate SWEEP_DIR [--wandb] [--project P] [--entity E] [--mode offline|online]",
        "Rebuild a sweep's reports (curve.csv/png, summary.json, pairs, control, cross-domain) from its jobs.",
        ["harmcore aggregate outputs/sweeps/smollm2_135m_instruct_all_signed_snip"],
    ),
    "export": (
        "harmcore export JOB_DIR [--out DIR]",
        "A job's pruned model as a Hugging Face checkpoint (safetensors, tokenizer, harmcore.json).",
        ["harmcore export outputs/runs/llama3_instruct/all/signed_snip/settings=1a2b3c4d/q=0.001 --out pruned-llama"],
    ),
    "serve": (
        "harmcore serve PATH [PORT] [--port N] [--host H] [--name NAME] [--api-key KEY] [--dtype D] [--out DIR]",
        "vLLM's OpenAI-compatible server on 127.0.0.1 for a job's pruned model (exported first), an "
        "exported one, or any model folder (e.g. a judge). The API key may come from VLLM_API_KEY.",
        [
            "harmcore serve outputs/runs/llama3_instruct/all/signed_snip/settings=1a2b3c4d/q=0.001 --port 8000",
            "harmcore serve pruned-llama --port 8000 --name pruned",
            "harmcore serve /models/Qwen2.5-7B-Instruct 8000",
        ],
    ),
}
CONFIG_COMMANDS = ("run", "generate-data", "finetune-em")


def overview() -> str:
    lines = ["usage: harmcore COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<14} {text}" for name, (_, text, _) in USAGE.items()]
    lines += ["", "`harmcore COMMAND --help` says more; `python -m experiments.run ...` is `harmcore run ...`."]
    return "\n".join(lines)


def command(name: str, conf_dir: Path = CONF_DIR) -> str:
    usage, text, examples = USAGE[name]
    lines = [f"usage: {usage}", "", text, "", "examples:", *(f"  {e}" for e in examples)]
    if name in CONFIG_COMMANDS:
        lines += ["", "config groups (GROUP=OPTION; their keys as GROUP.KEY=VALUE):"]
        folders = [p.name for p in conf_dir.iterdir() if p.is_dir() and p.name[0] not in "_." and p.name != "hydra"]
        for group in sorted(folders):
            lines.append(f"  {group:<15} {', '.join(options(group, [conf_dir]))}")
        launchers = ["basic", "submitit_local", "submitit_slurm", *options("hydra/launcher", [conf_dir])]
        lines.append(f"  {'hydra/launcher':<15} {', '.join(launchers)} (with -m)")
        lines += ["", "settings (KEY=VALUE):"]
        lines += [f"  {line}" for line in _top_level_keys(conf_dir / "config.yaml")]
        lines += [
            "",
            "`--cfg job` prints every key with its value; Hydra's own flags: --hydra-help.",
        ]
    return "\n".join(lines)


def _top_level_keys(path: Path) -> list[str]:
    """The plain top-level settings of config.yaml with their comments, as written there."""
    keys = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line[:1].isalpha() and ":" in line and not line.startswith(("defaults", "hydra")):
            keys.append(line.rstrip())
    return keys
