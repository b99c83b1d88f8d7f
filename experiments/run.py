"""Run one pruning job, or a sweep with -m: python -m experiments.run [overrides].

With experiment=emergent_misalignment (pipeline=em) each job is the EM recipe of harmcore.em.
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from harmcore.cli import main_guard, report_job_error
from harmcore.config import register_schemas, to_run_config
from harmcore.pipeline import run_job

register_schemas()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict | None:
    from hydra.core.hydra_config import HydraConfig

    job_dir = HydraConfig.get().runtime.output_dir
    try:
        run_cfg = to_run_config(cfg)
        if run_cfg.pipeline == "em":
            from harmcore.em import run_em

            return run_em(run_cfg, job_dir)
        return run_job(run_cfg, job_dir, OmegaConf.to_container(cfg, resolve=True))
    except Exception as err:  # HarmcoreError and anything else: see report_job_error
        report_job_error(err, job_dir)
        return None


if __name__ == "__main__":
    main_guard(main)()
