"""Model kinds. `channels` holds each kind's UNet input channels (the one place of those facts), `base` the
`Kind` every kind subclasses and the `Batch` it denoises, and `registry` the one table of kinds and which kind
a cell is. Each other module owns one kind (the params it reads, its problems, its batch-key share, its size,
its denoising): `txt2img`, `edit` (img2img of a given image, masked or not, and 9-channel inpaint),
`depth2img` (with `depth`, its depth maps), `instruct_pix2pix`, `unclip` and `x4` (the x4 upscaler as the model).
"""
