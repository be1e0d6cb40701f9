"""Denoising: `samplers` maps A1111 sampler and schedule names to diffusers schedulers (no torch), `guidance`
wraps a UNet in per-sample classifier-free guidance, `recipe` is the one run of a scheduler over a batch
(noise, generators, step noise, the loop and its per-step hooks), `img2img` starts it part-way down from an
image, `cpu_shards` splits a UNet batch across CPU threads, and `inference` is torch's inference mode for
modules that must import without torch.
"""
