"""The launcher files of harmcore/conf/hydra/launcher/ render the sbatch script they promise (no cluster)."""

import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from harmcore.run.argv import CONF_DIR
from harmcore.run.hydra_setup import register_schemas

register_schemas()


def job_script(launcher_name: str, tmp_path, monkeypatch) -> str:
    """The sbatch script the launcher would submit, built as hydra-submitit-launcher builds it.

    Only the text is rendered, nothing is submitted: submitit's check that `srun` is on PATH (it
    refuses to build a SLURM executor elsewhere) is answered as on a cluster, so this runs anywhere.
    """
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", [f"hydra/launcher={launcher_name}", "hydra.job.name=run"], return_hydra_config=True)
    params = instantiate(cfg.hydra.launcher).params
    executor = submitit.AutoExecutor(
        folder=tmp_path, cluster="slurm", slurm_max_num_timeout=params.pop("max_num_timeout")
    )
    params.pop("submitit_folder")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    return executor._executor._make_submission_file_text("python -m submitit.core._submit x", "uid")


@pytest.mark.parametrize(
    "name,lines",
    [
        ("local_slurm", ["--partition=debug", "--cpus-per-task=1", "--mem=4GB", "--time=30", "--signal=USR2@30"]),
        ("example_gpu_cluster", ["--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--time=240"]),
        (
            "example_multi_gpu_node",
            ["--partition=gpu", "--gpus-per-node=4", "--cpus-per-task=32", "--mem=256GB", "--time=480"],
        ),  # fmt: skip
    ],
)
def test_launcher_file_renders_its_job_script(name, lines, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    monkeypatch.setenv("WANDB_API_KEY", "wandb_secret_value")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    script = job_script(name, tmp_path, monkeypatch)
    for line in lines:
        assert f"#SBATCH {line}\n" in script, (line, script)
    # the environment reaches the jobs through --export=ALL, never through the script
    assert "#SBATCH --export=ALL\n" in script and "secret_value" not in script
    assert "export WANDB_MODE=offline\n" in script  # offline unless the submitting shell says otherwise
    assert "export OMP_NUM_THREADS=" in script


def test_launcher_keeps_an_online_wandb_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    assert "export WANDB_MODE=online\n" in job_script("local_slurm", tmp_path, monkeypatch)
