"""The SAM variant of gridgen-tiny: `python -m gridgen.tiny.train --variant sam`.

A `transformers` `SamModel` shrunk to 64 px images (4 px patches, a 2-layer, 64-wide ViT with global
attention, 64-wide prompt encoder and mask decoder), saved with its `SamProcessor`, so gridgen's
`sam_prompt` stage runs on it exactly as on facebook/sam-vit-base. It learns to segment the shape of
a shapes-data-set image from a point on it (three candidate masks, trained SAM's way: only the
best-matching one is penalised, and the IoU head learns each mask's quality) or from its box (one
mask). Trained from nothing with AdamW; about ten minutes on one CPU thread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gridgen.tiny import data as shapes
from gridgen.tiny.denoiser_training import Logger, Settings, lr_factor

DEFAULTS = {"unet_steps": 2000, "unet_batch": 16, "unet_lr": 1e-3, "warmup": 100}
EMBED = 64


def build_sam():
    from transformers import SamConfig, SamMaskDecoderConfig, SamModel, SamPromptEncoderConfig, SamVisionConfig

    side, patch = shapes.SIZE, 4
    vision = SamVisionConfig(hidden_size=64, output_channels=EMBED, num_hidden_layers=2, num_attention_heads=2,
                             image_size=side, patch_size=patch, window_size=0, global_attn_indexes=(0, 1),
                             num_pos_feats=EMBED // 2, mlp_dim=128, use_rel_pos=False, initializer_range=0.02)
    prompt = SamPromptEncoderConfig(hidden_size=EMBED, image_size=side, patch_size=patch, mask_input_channels=8)
    decoder = SamMaskDecoderConfig(hidden_size=EMBED, mlp_dim=4 * EMBED, num_hidden_layers=2, num_attention_heads=4,
                                   iou_head_hidden_dim=EMBED)
    return SamModel(SamConfig(vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(),
                              mask_decoder_config=decoder.to_dict(), initializer_range=0.02))


def build_processor():
    from transformers import SamImageProcessor, SamProcessor

    side = shapes.SIZE
    return SamProcessor(SamImageProcessor(size={"longest_edge": side}, pad_size={"height": side, "width": side}))


def point_on(sample: shapes.Sample, rng: np.random.Generator) -> tuple[float, float]:
    """A random pixel center on the shape, (x, y)."""
    ys, xs = np.nonzero(sample.mask)
    i = int(rng.integers(len(xs)))
    return float(xs[i]) + 0.5, float(ys[i]) + 0.5


def mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-mask BCE + dice; logits (..., H, W), target broadcastable to them, 0/1."""
    target = target.expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=(-2, -1))
    prob = logits.sigmoid()
    dice = 1 - (2 * (prob * target).sum(dim=(-2, -1)) + 1) / (prob.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1)) + 1)
    return bce + dice


def iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred, target = pred.bool(), target.bool().expand_as(pred)
    return (pred & target).sum(dim=(-2, -1)) / (pred | target).sum(dim=(-2, -1)).clamp(min=1)


def prompt_inputs(processor, samples: list[shapes.Sample], boxes: bool, rng: np.random.Generator) -> dict:
    images = [s.image for s in samples]
    if boxes:
        return processor(images, input_boxes=[[list(map(float, s.box))] for s in samples], return_tensors="pt")
    return processor(images, input_points=[[[point_on(s, rng)]] for s in samples],
                     input_labels=[[[1]] for _ in samples], return_tensors="pt")


def train(out: Path, settings: Settings, device: torch.device, log: Logger) -> None:
    model, processor = build_sam().to(device).train(), build_processor()
    opt = torch.optim.AdamW(model.parameters(), lr=settings.unet_lr, weight_decay=0.01)
    rng = np.random.default_rng([settings.seed, 51])
    running = 0.0
    for step in range(settings.unet_steps):
        for group in opt.param_groups:
            group["lr"] = settings.unet_lr * lr_factor(step, settings.unet_steps, settings.warmup)
        samples = shapes.make_batch(settings.seed * 1_000_003 + 900_000_011 + step, settings.unet_batch)
        boxes = step % 2 == 1  # alternate: a forward pass takes one prompt kind and one mask count
        inputs = prompt_inputs(processor, samples, boxes, rng).to(device)
        model_inputs = {k: v for k, v in inputs.items() if k not in ("original_sizes", "reshaped_input_sizes")}
        outputs = model(**model_inputs, multimask_output=not boxes)
        logits = outputs.pred_masks[:, 0]  # (B, masks, 64, 64): the images are not resized, only normalized
        target = torch.from_numpy(np.stack([s.mask for s in samples])).float().to(device)[:, None]
        losses = mask_loss(logits, target)
        best = losses.min(dim=1).values  # SAM's rule: only the closest of the candidate masks is penalised
        quality = iou(logits.detach() > 0, target)
        loss = best.mean() + F.mse_loss(outputs.iou_scores[:, 0], quality)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running += loss.item()
        if (step + 1) % settings.log_every == 0:
            log(f"sam step {step + 1}/{settings.unet_steps} loss {running / settings.log_every:.4f}")
            running = 0.0
    save(model, processor, out)


def save(model, processor, out: Path) -> None:
    from gridgen.fsutil import replace_dir

    with replace_dir(Path(out)) as staged:
        model.eval().cpu().half().save_pretrained(staged)
        processor.save_pretrained(staged)
