"""Make calibration data for a model and harm domain: python -m experiments.generate_data [overrides].

Takes the overrides of experiments.run (model=..., harm_domain=..., data.*) plus generate.*
(method self | prefill | counterpart); writes harmful.jsonl and benign.jsonl with provenance.
"""

import logging
import sys

from harmcore.cli import CONF_DIR, main_guard
from harmcore.config import register_schemas, to_run_config
from harmcore.datagen import generate


@main_guard
def main() -> None:
    from hydra import compose, initialize_config_dir

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = to_run_config(compose("config", overrides=sys.argv[1:]))
    prov = generate(cfg)
    print(f"{prov['n_examples']} harmful and {prov['n_benign']} benign examples -> {prov['out_dir']}")


if __name__ == "__main__":
    main()
