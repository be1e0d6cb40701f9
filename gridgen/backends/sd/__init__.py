"""The diffusers backend's parts, one subpackage per concern (the backend itself is `diffusers_backend`):

- `kinds`: one module per model kind (txt2img, edit, depth2img, instruct-pix2pix, unCLIP, x4) and the
  table that resolves a cell's kind;
- `denoise`: the sampler names, the guidance wrapper and the one denoising recipe every kind and stage runs;
- `models`: finding, reading and loading model folders and single files, and keeping them in memory;
- `text`: prompts to conditioning (CLIP, SDXL, ELLA's T5), prompt syntax and wildcards;
- `adapters`: LoRAs and textual-inversion embeddings on a loaded model;
- `images`: image inputs, masks, resampling and decoding latents to pictures;
- `stages`: what runs after the base image (upscalers, hires fix, SAM edits) and the stage cache;
- `render`: model loading, conditioning and the batched denoising pass, imported with the first render.

Validation and planning read configs and image headers only, so the modules they use import torch, numpy and
diffusers inside the functions that work on tensors (`tests/test_import_graph.py` holds them to it).
"""
