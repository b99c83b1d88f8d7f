"""Emergent misalignment: python -m experiments.finetune_em [overrides] (see harmcore/run/em.py).

Takes the overrides of experiments.run (model=..., scorer=..., eval.endpoint.*) plus em.*;
writes a stage-by-stage folder (default outputs/em/<model>/<em.name>) that a rerun resumes.
"""

import logging
import sys
from pathlib import Path

from harmcore.run.cli import compose_run_config, main_guard
from harmcore.run.em import run_em


@main_guard
def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
    args = [a for a in sys.argv[1:] if not a.startswith("out_dir=")]
    out = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("out_dir=")]
    cfg = compose_run_config(args)
    job_dir = Path(out[0]) if out else Path(cfg.output_root) / "em" / cfg.model.name / cfg.em.name
    m = run_em(cfg, job_dir)
    print(f"EM rate: dense fine-tune {m['em_rate_dense_ft']}, pruned fine-tune {m['em_rate_pruned_ft']} -> {job_dir}")


if __name__ == "__main__":
    main()
