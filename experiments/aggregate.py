"""Rebuild the reports of a sweep (curve, pairs, control, cross-domain CSV/PNG/JSON):

    python -m experiments.aggregate DIR [--wandb [--project P] [--entity E] [--mode offline|online]]

With --wandb every report CSV is logged as a W&B Table, every PNG as an image and, per model
family, one line plot per harm measure (one line per model) into one "curve" run of the sweep.
"""

import argparse

from harmcore.report.sweep import aggregate
from harmcore.run.cli import main_guard
from harmcore.run.config import LoggerConfig


@main_guard
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", help="a sweep folder, e.g. outputs/sweeps/<name>")
    parser.add_argument("--wandb", action="store_true", help="log the reports to a W&B run")
    parser.add_argument("--project", default="harmcore")
    parser.add_argument("--entity", default=None)
    parser.add_argument("--mode", default="offline", help="offline (sync later with `wandb sync`) or online")
    args = parser.parse_args()
    logger = LoggerConfig("wandb", args.project, args.entity, args.mode) if args.wandb else None
    summary = aggregate(args.sweep_dir, logger)
    print(f"{summary['n_points']} points, {summary['n_failed']} failed, {summary['n_missing']} missing")


if __name__ == "__main__":
    main()
