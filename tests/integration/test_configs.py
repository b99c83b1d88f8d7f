"""Every option of every config group composes and validates."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from harmcore.errors import HarmcoreError
from harmcore.run.config import GROUPS, Config
from harmcore.run.hydra_setup import register_schemas, to_run_config
from harmcore.run.options import CONF_DIR, options

register_schemas()


def composed(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=False)


@pytest.mark.parametrize("group,option", [(g, o) for g in list(GROUPS) + ["experiment"] for o in options(g)])
def test_every_option_composes_and_validates(group, option):
    cfg = composed([f"{group}={option}"])
    run = to_run_config(cfg)
    assert isinstance(run, Config)
    if group in GROUPS:
        node = getattr(run, group)
        assert isinstance(node, GROUPS[group])
        if group in ("model", "harm_domain", "scorer", "eval", "logger"):
            assert node.name == option  # folders and W&B groups are named after the option


def test_paper_models_name_their_counterparts():
    names = set(options("model"))
    for name in names:
        m = to_run_config(composed([f"model={name}"])).model
        if m.counterpart:
            assert m.counterpart in names, name
            partner = to_run_config(composed([f"model={m.counterpart}"])).model
            assert partner.aligned != m.aligned and partner.family == m.family


def test_used_by_command_composes_with_float_sparsity():
    cfg = composed(["model=llama3_instruct", "scorer=wanda", "sparsity=0.001"])
    run = to_run_config(cfg)
    assert run.sparsity == 0.001 and run.model.path == "meta-llama/Llama-3.1-8B-Instruct"
    assert run.scorer.harm_method == "wanda" and run.model.counterpart == "llama3_base"


def test_typo_in_key_fails_at_compose_time():
    with pytest.raises(Exception, match="n_calibrattion"):
        composed(["data.n_calibrattion=3"])
    with pytest.raises(Exception, match="sparsity"):
        composed(["sparsity=lots"])


@pytest.mark.parametrize(
    "override,message",
    [
        ("sparsity=1.5", r"sparsity=1.5 is outside \[0, 1\)"),
        ("pruning.p=-0.1", r"pruning.p=-0.1 is outside"),
        ("pruning.ranking=rowwise", "per_matrix, global or per_row"),
        ("scorer.harm_method=snipp", "scorer.harm_method=snipp"),
        ("data.n_eval=0", "data.n_eval=0"),
    ],
)
def test_out_of_range_values_are_one_line_errors(override, message):
    with pytest.raises(HarmcoreError, match=message):
        to_run_config(composed([override]))


def test_defaults_are_documented():
    text = (CONF_DIR / "config.yaml").read_text()
    for group in GROUPS:
        assert f"- {group}:" in text
    cfg = composed([])
    assert OmegaConf.select(cfg, "model.name") == "smollm2_135m_instruct"


def test_curve_hash_is_shared_by_a_curve_and_a_pair_and_parts_other_settings():
    from harmcore.run.hashing import config_hash, curve_hash

    def run(*overrides):
        return to_run_config(composed(list(overrides)))

    base = run("model=llama3_base", "sparsity=0.001")
    same_curve = [run("model=llama3_base", "sparsity=0.01"), run("model=llama3_instruct", "sparsity=0.001")]
    assert all(curve_hash(c) == curve_hash(base) for c in same_curve)
    assert all(config_hash(c) != config_hash(base) for c in same_curve)
    for other in ("pruning.ranking=global", "seed=1", "data.n_calibration=7"):
        assert curve_hash(run("model=llama3_base", "sparsity=0.001", other)) != curve_hash(base), other


def test_the_paper_protocol_has_every_value_of_its_table():
    """docs/protocol.md's table, row by row, against the composed protocol=paper config."""
    import re
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")
    main, pairs = text.split("### experiment=compression_pairs under protocol=paper")
    pairs = pairs.split("## Not yet reproduced")[0]

    def rows(table):
        return re.findall(r"^\|[^|]*\| `([\w.]+)` \| `([^`]*)` \|", table, re.M)

    assert len(rows(main)) >= 30 and len(rows(pairs)) >= 2, (rows(main), rows(pairs))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        paper = compose("config", overrides=["protocol=paper"])
        paper_pairs = compose("config", overrides=["protocol=paper", "experiment=compression_pairs"])
        harmcore = compose("config", overrides=[])
        harmcore_pairs = compose("config", overrides=["experiment=compression_pairs"])
    for cfg, table in ((paper, main), (paper_pairs, main), (paper_pairs, pairs)):
        for key, value in rows(table):
            got, want = OmegaConf.select(cfg, key), yaml.safe_load(value)
            if isinstance(got, float) and isinstance(want, str):  # YAML 1.1 reads 1e-5 as text
                want = float(want)
            if isinstance(got, str) and not isinstance(want, str):  # a prompt wording such as "...: {prompt}"
                want = value
            assert got == want, (key, got, value)
    # harmcore's pair comparison: identical text, plain top-q
    assert harmcore_pairs.data.pair_text == "shared" and harmcore_pairs.pruning.p == 0.0
    assert paper.protocol == "paper" and harmcore.protocol == "harmcore"
    run = to_run_config(paper)  # and it validates
    assert run.harm_domain.source == "advbench" and run.eval.strongreject.enabled
