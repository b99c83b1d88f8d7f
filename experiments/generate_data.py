"""Make calibration data for a model and harm domain: python -m experiments.generate_data [overrides].

Takes the overrides of experiments.run (model=..., harm_domain=..., data.*) plus generate.*
(method self | prefill | counterpart); writes harmful.jsonl and benign.jsonl with provenance.
"""

import logging
import sys

from harmcore.run.cli import compose_run_config, main_guard
from harmcore.run.datagen import generate


@main_guard
def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
    cfg = compose_run_config(sys.argv[1:])
    prov = generate(cfg)
    print(f"{prov['n_examples']} harmful and {prov['n_benign']} benign examples -> {prov['out_dir']}")


if __name__ == "__main__":
    main()
