"""Latent controls: per-step changes to a run that A1111 users get from extensions, each per sample in a batch.

- `options`: the controls' choices, spellings and PNG `parameters` names (no torch: validation reads them);
- `guided`: changes to the guided prediction (CFG rescale) and the x0 space the others work in;
- `dynamic_threshold` and `colour_grading`: adjustments of the guided prediction, through its x0;
- `latent_hooks`: changes to the latents after a step (mirroring, anti-burn), as the recipe's step hooks;
- `setup`: what one batch's cells ask for, as the guidance adjustment and the hooks `render` hands on.
"""
