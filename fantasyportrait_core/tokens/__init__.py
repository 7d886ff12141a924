"""Expression tokens and windows: the adapter's token encoder (projection + Perceiver resamplers), reading the
adapter files, features -> tokens, and the per-latent-frame windows the Wan branch attends to."""
