"""Training: LoRA fine-tuning (resumable, merged into a copy) and the refusal tuning that builds
an aligned partner offline.

May import: errors, files, data, core, generation.
"""
