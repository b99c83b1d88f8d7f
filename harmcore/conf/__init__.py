"""The Hydra config groups (YAML): values only; their schemas are harmcore.run.config's dataclasses.
A package only so that the configs are installed with harmcore. May import: nothing (no code).
"""
