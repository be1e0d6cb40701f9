"""The gridgen-tiny training code: its building blocks keep their promises, and each variant's
training run writes a folder its library's own pipeline loads (a few steps, tiny batches)."""

from __future__ import annotations

import pytest
import torch

from gridgen.tiny import TINY_MODEL_DIR, denoiser_training, models, train
from gridgen.tiny import data as shapes
from gridgen.tiny.tokenizer import build_tokenizer


def test_every_grammar_word_is_one_token(tmp_path):
    tokenizer = build_tokenizer(tmp_path)
    for word in shapes.GRAMMAR_WORDS:
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1


def test_a_widened_unet_predicts_what_its_source_did():
    _, text_encoder, _, unet = models.load_txt2img()
    wide = models.widen_unet(unet, 9)
    x = torch.randn(2, 4, 16, 16)
    context = text_encoder(torch.tensor([[0, 1, 2]] * 2)).last_hidden_state
    with torch.no_grad():
        before = unet(x, 500, encoder_hidden_states=context).sample
        after = wide(torch.cat([x, torch.randn(2, 5, 16, 16)], 1), 500, encoder_hidden_states=context).sample
    assert torch.allclose(before, after, atol=1e-5)


def test_rescaling_the_vae_scales_its_latents_and_keeps_its_images():
    from gridgen.tiny.upscaler import PIPELINE_SCALING_FACTOR, rescale_vae

    _, _, vae, _ = models.load_txt2img()
    images = torch.from_numpy(shapes.to_tensor_array(shapes.make_batch(5, 4)))
    old = models.encode_latents(vae, images)
    with torch.no_grad():
        old_decoded = vae.decode(old / vae.config.scaling_factor).sample
    rescale_vae(vae, PIPELINE_SCALING_FACTOR)
    new = models.encode_latents(vae, images)
    assert vae.config.scaling_factor == PIPELINE_SCALING_FACTOR
    assert torch.allclose(new, old, rtol=1e-3, atol=1e-4)  # scaled latents keep their statistics
    with torch.no_grad():
        new_decoded = vae.decode(new / vae.config.scaling_factor).sample
    assert torch.allclose(new_decoded, old_decoded, atol=1e-4)


def test_inpaint_batches_mask_the_region_and_ask_for_the_right_picture():
    from gridgen.tiny.inpaint import inpaint_batches

    _, _, vae, _ = models.load_txt2img()
    settings = denoiser_training.Settings(unet_batch=12, caption_dropout=0.0)
    batch = inpaint_batches(vae, settings)(0, torch.Generator().manual_seed(0))
    assert batch.latents.shape == (12, 4, 16, 16)
    assert batch.conditioning.shape == (12, 5, 16, 16)  # latent-size mask, then the masked image's latents
    assert set(batch.conditioning[:, 0].unique().tolist()) <= {0.0, 1.0}
    captions = {denoiser_training.ALL_CAPTIONS[i] for i in batch.caption.tolist()}
    assert any(c.split()[1] in shapes.BACKGROUNDS for c in captions)  # some removals, captioned background-only


@pytest.mark.parametrize("variant, pipeline", [
    ("inpaint", "StableDiffusionInpaintPipeline"),
    ("x4", "StableDiffusionUpscalePipeline"),
])
def test_a_short_variant_run_writes_a_folder_diffusers_loads(tmp_path, variant, pipeline):
    import diffusers
    from PIL import Image

    out = tmp_path / variant
    train.main(["--variant", variant, "--steps", "2", "--unet-batch", "4", "--log-every", "1", "--out", str(out)])
    pipe = getattr(diffusers, pipeline).from_pretrained(out, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if variant == "inpaint":
        image = pipe("a red circle on a white background", image=Image.new("RGB", (64, 64), "white"),
                     mask_image=Image.new("L", (64, 64), 255), height=64, width=64, num_inference_steps=2).images[0]
    else:
        assert pipe.unet.config.in_channels == 7 and pipe.config.max_noise_level == 350
        image = pipe("a red circle on a white background", image=Image.new("RGB", (16, 16), "white"),
                     num_inference_steps=2).images[0]
    assert image.size == (64, 64)


def test_a_short_sam_run_writes_a_folder_transformers_loads(tmp_path):
    from transformers import SamModel, SamProcessor

    out = tmp_path / "sam"
    train.main(["--variant", "sam", "--steps", "2", "--unet-batch", "4", "--log-every", "1", "--out", str(out)])
    model, processor = SamModel.from_pretrained(out), SamProcessor.from_pretrained(out)
    image = shapes.make_batch(3, 1)[0].image
    inputs = processor(image, input_points=[[[32.0, 32.0]]], return_tensors="pt")
    with torch.no_grad():
        outputs = model(pixel_values=inputs["pixel_values"].to(model.dtype), input_points=inputs["input_points"])
    masks = processor.image_processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"],
                                                         inputs["reshaped_input_sizes"])
    assert masks[0].shape[-2:] == (64, 64)


def test_the_shipped_txt2img_folder_is_what_training_writes():
    names = {p.relative_to(TINY_MODEL_DIR).as_posix() for p in TINY_MODEL_DIR.rglob("*") if p.is_file()}
    assert {"model_index.json", "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
            "text_encoder/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt"} <= names
