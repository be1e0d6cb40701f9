"""The Stable Diffusion pieces the diffusers backend composes.

`locate` finds model folders and reads their configs, `load` loads weights onto a device, `text`
turns prompts into cached conditioning, `sampling` owns the guidance wrapper and the denoising
loop, and `images` decodes latents to resized PIL images.
"""
