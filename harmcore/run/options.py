"""The options of the config groups in conf/ (model, harm_domain, scorer, ...) as schema dataclasses.

`model.counterpart=llama3_base`, `eval_domain=violence` and `intersect_domains=[...]` name options
of a group; `option_config` reads one as the group's dataclass, outside Hydra's composition.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from harmcore.errors import unknown_name
from harmcore.run.argv import CONF_DIR, options
from harmcore.run.config import GROUPS, HarmDomainConfig


def option_config(group: str, name: str, conf_dir: Path = CONF_DIR):
    """The config group option `name` (e.g. harm_domain/violence.yaml) as its schema dataclass."""
    valid = options(group, [conf_dir])
    if name not in valid:
        raise unknown_name(group, name, valid)
    values = OmegaConf.to_container(OmegaConf.load(conf_dir / group / f"{name}.yaml"))
    values.pop("defaults", None)
    return GROUPS[group](**values)


def domain_config(name: str, conf_dir: Path = CONF_DIR) -> HarmDomainConfig:
    """The harm_domain option `name` as a dataclass (its YAML values over the schema defaults)."""
    return option_config("harm_domain", name, conf_dir)
