"""Models: the one model description (`config.ModelConfig`), loading from the hub or a local
folder (`loading`), and the models harmcore builds itself, offline (`builders.BUILDERS`).

May import: errors, files, data, core, generation, training (a built model may be trained).
"""
