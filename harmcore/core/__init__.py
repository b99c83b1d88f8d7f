"""The method's core: which weights exist, the loss, per-weight scores, set-difference
selection and masks applied in place.

    weights.py        prunable linears (found by structure), fingerprint of the weights
    losses.py         per-example response loss L_n (mean over response tokens)
    scoring.py        the scorer registry: signed SNIP, SNIP, Wanda, magnitude, random
    selection.py      top-q harm minus top-p preserve -> Mask (per matrix, per row, global)
    masking.py        zero a Mask in place and restore it; save/load masks
    score_store.py    the content-addressed score cache (safetensors + metadata)

May import: errors, files, data (examples and their tokenization). Nothing above it.
"""
