"""Run one pruning job, or a sweep with -m: python -m experiments.run [overrides].

With experiment=emergent_misalignment (pipeline=em) each job is the EM recipe of harmcore.run.em.
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from harmcore.run.cli import main_guard, report_job_error
from harmcore.run.config import register_schemas, to_run_config
from harmcore.run.em import run_em
from harmcore.run.job import run_job
from harmcore.run.session import Session

register_schemas()
# The jobs of a sweep run in this process (Hydra's basic launcher): they share one session.
SESSION = Session()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict | None:
    from hydra.core.hydra_config import HydraConfig

    job_dir = HydraConfig.get().runtime.output_dir
    try:
        run_cfg = to_run_config(cfg)
        if run_cfg.pipeline == "em":
            return run_em(run_cfg, job_dir, SESSION)
        return run_job(run_cfg, job_dir, OmegaConf.to_container(cfg, resolve=True), SESSION)
    except Exception as err:  # HarmcoreError and anything else: see report_job_error
        report_job_error(err, job_dir)
        return None


if __name__ == "__main__":
    main_guard(main)()
