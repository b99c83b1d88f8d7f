"""Hydra's side of the config: the schemas in its ConfigStore, the resolvers that name job folders,
and the composed DictConfig turned into the validated `Config`.
"""

from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from harmcore.errors import HarmcoreError
from harmcore.run.config import GROUPS, Config
from harmcore.run.hashing import folder_hash


def register_schemas() -> None:
    """Register the schemas with Hydra's ConfigStore (as `<group>/schema` and `schema`), and the
    resolvers of conf/config.yaml's folder names."""
    resolvers = {
        # reverse-direction jobs get their own folder level
        "harmcore_target": lambda t: "" if t == "harm" else f"target={t}/",
        # "q=<q>" for a one-point job, "q=grid" for a job that walks several q
        "harmcore_qdir": lambda q, qs: "q=grid" if qs else f"q={q}",
        # "settings=<hash>": every setting the path does not name (see hashing.folder_hash)
        "harmcore_settings": _settings_dir,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    for group, node in GROUPS.items():
        cs.store(group=group, name="schema", node=node)


def _settings_dir(*, _root_) -> str:
    """The job's settings as a folder name; the job's config is the root without Hydra's node."""
    job = OmegaConf.masked_copy(_root_, [k for k in _root_ if k != "hydra"])
    job = OmegaConf.merge(OmegaConf.structured(Config), job)
    return f"settings={folder_hash(to_run_config(job))}"


def to_run_config(cfg: Any) -> Config:
    """DictConfig -> validated `Config` (ranges checked in `__post_init__`)."""
    try:
        return OmegaConf.to_object(cfg)
    except HarmcoreError:
        raise
    except Exception as err:  # omegaconf wraps errors raised in __post_init__
        cause = err.__cause__ or err.__context__
        if isinstance(cause, HarmcoreError):
            raise cause from None
        raise HarmcoreError(f"invalid config: {str(err).splitlines()[0]}") from err
