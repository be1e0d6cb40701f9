"""txt2img: a 4-channel UNet's latents start from pure noise at the batch's size and are denoised under each
cell's prompt. A 9-channel inpainting model's base image of a SAM edit (which has no init image) runs here too.
"""

from __future__ import annotations

from gridgen.backends.base import ParamProblem
from gridgen.backends.sd.kinds.base import Batch, Kind, unchanged


class Txt2Img(Kind):
    name = "txt2img"

    def problems(self, params, info, services):
        if params.get("init_image") and not params.get("sam_prompt"):  # only `pipeline: txt2img` gets here
            return [ParamProblem("pipeline", "pipeline txt2img draws from noise and reads no init_image; drop "
                                             "init_image, or drop `pipeline` to edit the image")]
        return []

    def denoise(self, batch: Batch):
        width, height = batch.size
        channels = batch.parts.unet.config.in_channels
        batch.recipe.full_schedule(batch.steps)
        latents = batch.recipe.start_from_noise((channels, height // batch.factor, width // batch.factor))
        return batch.recipe.run(batch.guide(), latents), [unchanged] * len(batch.cells)


KIND = Txt2Img()
