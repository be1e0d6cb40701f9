"""Images in and out: `inputs` loads a cell's image files (and checks them without torch), `masks` blurs, crops
and pastes back inpainting masks, `inpainters` fills masked pixels, `resample` resizes and converts between
PIL and tensors, `images` decodes latents, and `decoding` runs the VAE decode beside the UNet.
"""
