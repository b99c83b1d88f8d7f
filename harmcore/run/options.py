"""The options of the config groups in conf/ (model, harm_domain, scorer, ...) as schema dataclasses.

`model.counterpart=llama3_base`, `eval_domain=violence` and `intersect_domains=[...]` name options
of a group; `option_config` reads one as the group's dataclass, outside Hydra's composition.
"""

from __future__ import annotations

from pathlib import Path

from harmcore.errors import unknown_name
from harmcore.run.config import GROUPS, HarmDomainConfig

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def option_config(group: str, name: str, conf_dir: Path = CONF_DIR):
    """The config group option `name` (e.g. harm_domain/violence.yaml) as its schema dataclass."""
    from omegaconf import OmegaConf

    valid = options(group, conf_dir)
    if name not in valid:
        raise unknown_name(group, name, valid)
    values = OmegaConf.to_container(OmegaConf.load(conf_dir / group / f"{name}.yaml"))
    values.pop("defaults", None)
    return GROUPS[group](**values)


def domain_config(name: str, conf_dir: Path = CONF_DIR) -> HarmDomainConfig:
    """The harm_domain option `name` as a dataclass (its YAML values over the schema defaults)."""
    return option_config("harm_domain", name, conf_dir)
