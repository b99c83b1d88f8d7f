"""Overrides checked against the schema before anything runs or is queued.

- `check_keys`: a key the schema does not have is one line with the closest key ("unknown key
  'sparsty'. Did you mean 'sparsity'?"), with or without `+`; `+key` on a key the schema has is
  refused with the right spelling (Hydra would add it beside the real one, silently unused).
- `check_jobs`: every job of a sweep (the command line's sweeps and an experiment file's
  `hydra.sweeper.params`) is composed and validated, so a bad value fails before the first job is
  launched, not on a cluster after queueing.
"""

from __future__ import annotations

import dataclasses
import itertools
import types
import typing
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from harmcore.errors import HarmcoreError, did_you_mean
from harmcore.run import argv as argv_
from harmcore.run.config import Config
from harmcore.run.hydra_setup import register_schemas, to_run_config


def _fields(cls) -> dict[str, object]:
    """field name -> its dataclass type, dict for a free-form dict, or None for a leaf."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if typing.get_origin(t) in (typing.Union, types.UnionType):  # `ModelConfig | None`
            args = [a for a in typing.get_args(t) if a is not type(None)]
            t = args[0] if len(args) == 1 else t
        out[f.name] = t if dataclasses.is_dataclass(t) else dict if typing.get_origin(t) is dict else None
    return out


def key_exists(key: str) -> tuple[bool, str, bool]:
    """(whether the dotted key is in the schema, "" or a hint naming the closest key, whether it is a
    free-form dict or a key inside one, such as em.judge_templates.<name>, which Hydra adds with '+')."""
    cls, done = Config, []
    for part in key.split("."):
        fields = _fields(cls)
        if part not in fields:
            hint = did_you_mean(part, fields)
            if hint:  # name the full corrected key
                hint = f" Did you mean {'.'.join([*done, hint.split(chr(39))[1]])!r}?"
            return False, hint, False
        done.append(part)
        cls = fields[part]
        if cls is dict:  # takes any key below it
            return True, "", True
        if cls is None:
            return True, "", False
    return True, "", False


def check_keys(overrides: list[str], groups: set[str]) -> None:
    for arg in overrides:
        if "=" not in arg:
            continue
        raw = arg.split("=", 1)[0]
        key = raw.lstrip("~+")
        if key.startswith(("hydra.", "hydra/")) or "@" in key or "/" in key or key in groups:
            continue  # Hydra's own settings, and config group choices (checked by argv.check_options)
        exists, hint, in_dict = key_exists(key)
        if not exists:
            raise HarmcoreError(f"unknown key {key!r} in {arg!r}.{hint} `--cfg job` prints every key")
        if raw.startswith("+") and not raw.startswith("++") and not in_dict:
            value = arg.split("=", 1)[1]
            raise HarmcoreError(f"{key} is a key of the config: set it with {key}={value} (a '+' adds a new key)")


def check_jobs(argv: list[str], dirs: list[Path]) -> list[Config]:
    """Compose and validate every job `argv` describes (one, or each of a sweep); return their configs."""
    register_schemas()
    overrides = argv_.split(argv)[1]
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    extra = [f"hydra.searchpath=[{','.join('file://' + str(d.resolve()) for d in dirs[:-1])}]"] if dirs[:-1] else []
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(argv_.CONF_DIR), version_base="1.3"):
            base = compose("config", overrides=[*fixed, *extra], return_hydra_config=True)
            params = [f"{k}={v}" for k, v in (base.hydra.sweeper.get("params") or {}).items()]
            batches = BasicSweeper.split_arguments(parser.parse_overrides(params + overrides), None)
            jobs = list(itertools.chain(*batches))
            configs = [to_run_config(compose("config", overrides=[*job, *extra])) for job in jobs]
    except (HydraException, OmegaConfBaseException) as err:
        lines = [line.strip() for line in str(err).strip().splitlines()[:2]]
        raise HarmcoreError(f"{' '.join(lines).rstrip('.')}; check it against `--cfg job`") from None
    finally:
        GlobalHydra.instance().clear()
    return configs
