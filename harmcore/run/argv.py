"""The command line as users type it, before Hydra reads it (light: no torch, no Hydra).

- `hydra_order`: Hydra 1.3's argparse takes its flags only before the first override, so
  `... model=x -m sparsity=0.1,0.2` fails there; the flags are moved to the front, in order.
- `check_options`: every value given to a config group (`model=...`, `eval_domain=...`,
  `+model@data.responses_from=...`) names an option of that group, in harmcore's conf/ or in a
  folder given with `--config-dir` (a user's own models and cluster launchers).
- `check_writable`: output_root takes files.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from harmcore.errors import HarmcoreError, unknown_name

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# Hydra's flags and how many values follow each ("info": one optional value among its choices).
HYDRA_FLAGS = {
    **dict.fromkeys(("-m", "--multirun", "-r", "--run", "--resolve", "-sc", "--shell-completion"), 0),
    **dict.fromkeys(("--hydra-help", "--version"), 0),
    **dict.fromkeys(("-c", "--cfg", "-p", "--package", "-cp", "--config-path", "-cn", "--config-name"), 1),
    **dict.fromkeys(("-cd", "--config-dir", "--experimental-rerun"), 1),
    **dict.fromkeys(("-i", "--info"), "info"),
}
INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")
# Plain keys whose values name options of a config group.
OPTION_KEYS = {"eval_domain": "harm_domain", "intersect_domains": "harm_domain"}


def split(argv: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra's flags with their values, the overrides), each in the order given."""
    flags, overrides, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0] if arg.startswith("--") else arg
        arity = HYDRA_FLAGS.get(name)
        if arity is None or not arg.startswith("-"):
            overrides.append(arg)
        elif "=" in arg or arity == 0:
            flags.append(arg)
        elif arity == "info":
            take = i + 1 < len(argv) and argv[i + 1] in INFO_CHOICES
            flags += argv[i : i + 1 + take]
            i += take
        else:
            flags += argv[i : i + 2]
            i += 1
        i += 1
    return flags, overrides


def hydra_order(argv: list[str]) -> list[str]:
    """Hydra's flags first (with their values), then the overrides: `-m` may come anywhere."""
    flags, overrides = split(argv)
    return flags + overrides


def is_multirun(argv: list[str]) -> bool:
    return any(f in ("-m", "--multirun") for f in split(argv)[0])


def conf_dirs(argv: list[str]) -> list[Path]:
    """harmcore's conf/ and the user's folder given with --config-dir/-cd (searched first by Hydra)."""
    flags, extra = split(argv)[0], []
    for i, flag in enumerate(flags):
        if flag in ("-cd", "--config-dir") and i + 1 < len(flags):
            extra.append(Path(flags[i + 1]).expanduser())
        elif flag.startswith("--config-dir="):
            extra.append(Path(flag.split("=", 1)[1]).expanduser())
    for path in extra:
        if not path.is_dir():
            raise HarmcoreError(f"--config-dir {path} is not a folder: give a folder of config groups (model/, ...)")
    return [*extra, CONF_DIR]


def options(group: str, dirs: list[Path] | None = None) -> list[str]:
    """The options of a config group: its YAML files in every config folder."""
    return sorted({p.stem for d in dirs or [CONF_DIR] for p in (d / group).glob("*.yaml")})


def groups(dirs: list[Path]) -> set[str]:
    return {p.name for d in dirs if d.is_dir() for p in d.iterdir() if p.is_dir() and p.name != "hydra"}


def check_options(argv: list[str]) -> None:
    """Every option named on the line exists. One line otherwise."""
    dirs = conf_dirs(argv)
    known = groups(dirs)
    for arg in split(argv)[1]:
        if "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        group = key.split("@", 1)[0]  # model@data.responses_from: an option of model, placed elsewhere
        group = group if group in known else OPTION_KEYS.get(key)
        if group:
            valid = options(group, dirs)
            for v in value.strip("[]").split(","):
                if v and v != "null" and v not in valid:
                    raise unknown_name(key, v, valid)


# Settings that name folders harmcore writes into.
FOLDER_KEYS = ("output_root", "cache_dir", "hydra.run.dir", "hydra.sweep.dir", "datagen.out_dir")


def check_writable(argv: list[str]) -> None:
    """Every folder named on the line (created if need be) takes files: the last check, when all
    else passed, so that a line with a mistake creates nothing."""
    for arg in split(argv)[1]:
        key, _, value = arg.partition("=")
        if key.lstrip("+") in FOLDER_KEYS and value not in ("", "null") and "${" not in value:
            path = Path(value).expanduser()
            try:
                path.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=path):
                    pass
            except OSError as err:
                raise HarmcoreError(
                    f"{key.lstrip('+')}={path} is not writable ({err.strerror}): choose a folder you can write to"
                ) from None
