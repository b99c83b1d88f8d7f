"""Rebuild curve.csv, curve.png and summary.json of a sweep: python -m experiments.aggregate DIR."""

import argparse

from harmcore.cli import main_guard
from harmcore.report import aggregate


@main_guard
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sweep_dir", help="a sweep folder, e.g. outputs/sweeps/<name>")
    summary = aggregate(parser.parse_args().sweep_dir)
    print(f"{summary['n_points']} points, {summary['n_failed']} failed, {summary['n_missing']} missing")


if __name__ == "__main__":
    main()
