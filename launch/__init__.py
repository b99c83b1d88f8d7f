"""Cluster launcher configs, found by Hydra through `hydra.searchpath: [pkg://launch]`.

launch/hydra/launcher/<cluster>.yaml extends hydra-submitit-launcher's `submitit_slurm`;
pick one with `python -m experiments.run -m hydra/launcher=<cluster> ...`.
`local_slurm` targets the single-node cluster of scripts/slurm/start.sh (tests/slurm use it);
`example_gpu_cluster` is the template for a real GPU cluster.
"""
