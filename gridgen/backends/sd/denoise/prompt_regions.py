"""Regional Prompter's prompt mode: each region found where the main prompt's cross-attention looks at the region's
target word (`regions: Prompt` or `Prompt-Ex`, read by `text/regions.py`).

Before a batch with prompt-mode cells denoises, their main prompts are denoised alone for the first step of their
run (their own sampler, seeds and start noise), and during the second step's UNet call `Capture` records, at every
cross-attention layer, how much each position attends to each region's target tokens: the attention probabilities
raised to 1.2 and summed over the target's tokens, averaged over the heads, as the extension gathers them from the
second step. The maps of the layers at the finest resolution the UNet attends at are summed, scaled to run from 0
to 1, kept where they pass the region's `region_threshold` and stretched to the latent grid. The cells then
denoise from their first step with these masks as their regions, as the extension restarts from step 0 once its
masks are ready.

Two choices differ from the extension, whose maps on gridgen-tiny find the whole canvas: it also adds the coarser
layers' maps, stretched, which there attend to the target word mostly in the background; and it divides a map by
its maximum alone, which keeps everything where a map's lowest value is far above 0. On maps that go down to 0
the scalings agree.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gridgen import prompt_tags
from gridgen.backends.sd.denoise.guidance import Context, guide_for
from gridgen.backends.sd.denoise.recipe import Recipe
from gridgen.backends.sd.denoise.regional_attention import attention_grid
from gridgen.backends.sd.text import regions

POWER = 1.2  # the extension's weighting of attention probabilities on SD 1.x and 2.x


class Capture:
    """A processor that records the attention each row's cross-attention gives its regions' target tokens (passed
    as `cross_attention_kwargs["capture"]`: `rows`, the rows' places in `maps`, and `targets`, (rows, regions,
    tokens) weights of 1 on each target's tokens), around the module's own processor."""

    def __init__(self, inner: Any, maps: dict[int, torch.Tensor], size: tuple[int, int, int],
                 lock: threading.Lock):
        self.inner, self.maps, self.size, self.lock = inner, maps, size, lock

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 capture: dict[str, torch.Tensor] | None = None, **kwargs: Any) -> torch.Tensor:
        if capture is not None and encoder_hidden_states is not None and hidden_states.ndim == 3:
            self._record(attn, hidden_states, encoder_hidden_states, attention_mask, capture)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)

    def _record(self, attn, hidden_states: torch.Tensor, context: torch.Tensor, attention_mask: torch.Tensor | None,
                capture: dict[str, torch.Tensor]) -> None:
        batch, positions, _ = hidden_states.shape
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(context))
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
        probs = attn.get_attention_scores(query, key, attention_mask).view(batch, attn.heads, positions, -1)
        found = torch.einsum("bhnt,brt->brn", probs.float() ** POWER, capture["targets"].float()) / attn.heads
        rows, regions_count, *latent = self.size
        with self.lock:  # CPU shards record their slices of the batch from threads of their own
            if positions not in self.maps:
                self.maps[positions] = found.new_zeros((rows, regions_count, *attention_grid(positions, latent)))
            grid = self.maps[positions]
            grid[capture["rows"].to(grid.device)] += found.reshape(batch, regions_count, *grid.shape[2:])


@contextmanager
def capturing(unet, maps: dict[int, torch.Tensor], size: tuple[int, int, int]) -> Iterator[None]:
    """`Capture` around every attention processor of `unet`, recording into `maps` (by a layer's number of
    positions, (rows, regions, h, w) sums; `size` is (rows, regions, latent h, latent w)); the originals back
    after."""
    original = dict(unet.attn_processors)
    lock = threading.Lock()
    unet.set_attn_processor({name: Capture(processor, maps, size, lock) for name, processor in original.items()})
    try:
        yield
    finally:
        unet.set_attn_processor(original)


def target_weights(prompts, mains: Sequence[str], targets: Sequence[Sequence[str]], tokens: int) -> torch.Tensor:
    """(rows, regions, tokens): 1 where a main prompt's context holds a token of a region's target word (its first
    place, as the extension finds it), 0 elsewhere. `prompts` is the model's prompt encoder."""
    chunker = getattr(prompts, "chunkers", [prompts])[0]  # SDXL's two encoders chunk a text alike
    tokenizer = chunker.tokenizer
    special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    found = torch.zeros((len(mains), max(map(len, targets)), tokens))
    for row, (main, words) in enumerate(zip(mains, targets, strict=True)):
        ids = chunker.token_rows([main]).ids.flatten().tolist()
        for region, word in enumerate(words):
            for token in chunker.token_rows([word]).ids.flatten().tolist():
                if token not in special and token in ids and ids.index(token) < tokens:
                    found[row, region, ids.index(token)] = 1.0
    return found


def find(unet, prompts, batch: Sequence[dict[str, Any]],
         encode: Callable[[list[dict[str, Any]]], tuple[Context, Context, dict[str, Any]]],
         recipe_for: Callable[[list[dict[str, Any]]], Recipe], shape: tuple[int, int]) -> dict[int, list[np.ndarray]]:
    """Each prompt-mode cell's region masks at the latent `shape` (1 inside, 0 outside), by its place in `batch`.
    `encode` gives text rows' conditioning, `recipe_for` a run over cells as the batch's own would be."""
    cells = [index for index, params in enumerate(batch) if regions.active(params) and regions.prompt_mode(params)]
    if not cells:
        return {}
    picked = [batch[index] for index in cells]
    split = [regions.prompt_regions(str(params["prompt"])) for params in picked]
    mains = [prompt_tags.take_loras(parts.main)[0] for parts in split]  # the cell's own LoRAs apply here
    rows = [{**params, "prompt": main, "negative_prompt": regions.negatives(params)[-1]}
            for params, main in zip(picked, mains, strict=True)]
    cond, uncond, text = encode(rows)
    recipe = recipe_for(picked)
    timesteps = recipe.full_schedule(int(picked[0]["steps"]))
    latents = recipe.start_from_noise((unet.config.in_channels, *shape))
    if len(timesteps) > 1:
        denoise = guide_for(unet, cond, uncond, [float(params["cfg_scale"]) for params in picked], **text)()
        first = timesteps[0]
        eps = denoise(recipe.scheduler.scale_model_input(latents, first), first)
        latents = recipe.scheduler.step(eps, first, latents, **recipe.step_kwargs()).prev_sample
    step = timesteps[min(1, len(timesteps) - 1)]
    targets = target_weights(prompts, mains, [parts.targets for parts in split], cond.shape[1])
    maps: dict[int, torch.Tensor] = {}
    with capturing(unet, maps, (len(picked), targets.shape[1], *shape)):
        unet(recipe.scheduler.scale_model_input(latents, step).to(unet.dtype), step, encoder_hidden_states=cond,
             encoder_attention_mask=text["masks"][0], added_cond_kwargs=text["added_cond"],
             cross_attention_kwargs={"capture": {"rows": torch.arange(len(picked)), "targets": targets.to(cond)}})
    finest = maps[max(maps)]
    found = {}
    for number, (index, params, parts) in enumerate(zip(cells, picked, split, strict=True)):
        masks = []
        for region, threshold in enumerate(regions.thresholds(params, len(parts.regions))):
            values = finest[number, region]
            scaled = (values - values.min()) / (values.max() - values.min()).clamp_min(1e-12)
            inside = (scaled > threshold).float()[None, None]
            masks.append(F.interpolate(inside, size=shape, mode="nearest")[0, 0].cpu().numpy())
        found[index] = masks
    return found
