"""LoRA and textual-inversion embeddings on SDXL: a LoRA's UNet and both text-encoder halves apply (kohya
`lora_te1_`/`lora_te2_` and diffusers `text_encoder.`/`text_encoder_2.` files alike) as diffusers' own
pipeline applies them, the weight is an axis that reloads nothing, `clip_l`/`clip_g` embeddings reach
both encoders, and embeddings made for another model are clear validation errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.adapters import embeddings
from gridgen.cli import main
from tests import tiny_models
from tests.network_fixtures import (
    kohya_to_diffusers_text,
    merge_text_encoder_lora,
    sgm_names,
    text_encoder_kohya_weights,
    unet_lora_weights,
    write_a1111_safetensors,
    write_diffusers_lora,
    write_kohya_lora,
    write_sdxl_embedding,
)
from tests.spec_helpers import write_spec

WIDTHS = (32, 40)  # the tiny SDXL text encoders' token widths
TEXT_PREFIXES = (("lora_te1", "text_encoder"), ("lora_te2", "text_encoder_2"))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    # The CLIP vocabulary files are written once per module, away from the user's own cache.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield tmp_path_factory.mktemp("sdxl")


@pytest.fixture(scope="module")
def model(root):
    return tiny_models.build(root / "model", "sdxl", seed=3).folder


def text_weights(seed: int = 0) -> dict[str, dict]:
    return {prefix: text_encoder_kohya_weights(seed=seed + index, width=width, prefix=prefix)
            for index, ((prefix, _), width) in enumerate(zip(TEXT_PREFIXES, WIDTHS, strict=True))}


@pytest.fixture(scope="module")
def files(root, model):
    """The same LoRA (UNet and both text encoders) as kohya files (UNet keys in diffusers' and in the original SGM
    layout) and as a diffusers file, plus embeddings."""
    unet = unet_lora_weights(seed=4, model=model)
    loras = root / "spec" / "loras"
    kohya = write_kohya_lora(loras / "xl_kohya.safetensors", unet)
    text = {key: value for weights in text_weights().values() for key, value in weights.items()}
    save_file({**load_file(kohya), **text}, kohya)
    sgm = write_kohya_lora(loras / "xl_sgm.safetensors", sgm_names(unet))
    save_file({**load_file(sgm), **text}, sgm)
    diffusers_weights = load_file(write_diffusers_lora(root / "diffusers_lora", unet))  # `unet.` keys
    for prefix, component in TEXT_PREFIXES:
        diffusers_weights.update(kohya_to_diffusers_text(text_weights()[prefix], prefix, component))
    xl_diffusers = loras / "xl_diffusers.safetensors"
    save_file(diffusers_weights, xl_diffusers)
    generator = torch.Generator().manual_seed(7)
    clip_l, clip_g = (torch.randn((2, width), generator=generator) for width in WIDTHS)
    spec_embeddings = root / "spec" / "embeddings"
    return {
        "kohya": kohya, "diffusers": xl_diffusers, "clip_l": clip_l, "clip_g": clip_g,
        "style": write_sdxl_embedding(spec_embeddings / "xlstyle.safetensors", clip_l, clip_g),
        "no_g": write_sdxl_embedding(spec_embeddings / "half.safetensors", clip_l, None),
        "sd1": write_a1111_safetensors(spec_embeddings / "oldstyle.safetensors", torch.randn(2, 64)),
    }


@pytest.fixture(scope="module")
def backend(root, files):
    instance = DiffusersBackend(BackendContext(spec_dir=root / "spec", device="cpu", cache_bytes=0))
    yield instance
    instance.close()


def make_cell(model, **params) -> Cell:
    base = {"prompt": "a red cat", "negative_prompt": "blurry", "seed": 5, "steps": 3, "cfg_scale": 6.0,
            "sampler": "Euler", "model": str(model), "width": 32, "height": 32}
    return Cell(index=0, key="0", coords=("0",), params={**base, **params})


def image(backend, model, **params) -> np.ndarray:
    (result,) = backend.render([make_cell(model, **params)])
    return np.asarray(result.image, dtype=np.float64)


def encodings(backend, model, lora_values=None, text="a red cat") -> tuple[torch.Tensor, torch.Tensor]:
    """(context, pooled) of the prompt with the cell's LoRAs active, as a render encodes it."""
    with torch.inference_mode():
        backend.networks.use_loras(backend._lora_set(make_cell(model, lora=lora_values).params))
        return backend.prompts.encode([(text, 1)])[0].clone(), backend.prompts.pooled([(text, 1)])[0].clone()


def test_sdxl_lora_and_embedding_params_validate(backend, model):
    cell = make_cell(model, lora=["xl_kohya:0.5", "xl_diffusers"], prompt="a xlstyle cat")
    assert backend.validate(cell.params) == []


def test_both_text_encoders_take_the_lora_as_the_merged_weights_do(backend, model):
    image(backend, model)
    loads = backend.models.loads
    parts = backend._components
    plain_context, plain_pooled = encodings(backend, model)
    context, pooled = encodings(backend, model, ["xl_kohya:0"])
    assert torch.equal(context, plain_context) and torch.equal(pooled, plain_pooled)
    for weight in (0.5, 1.0):
        context, pooled = encodings(backend, model, [f"xl_kohya:{weight}"])
        first, second = context[:, :WIDTHS[0]], context[:, WIDTHS[0]:]
        assert (first - plain_context[:, :WIDTHS[0]]).abs().mean() > 0.05
        assert (second - plain_context[:, WIDTHS[0]:]).abs().mean() > 0.05
        assert (pooled - plain_pooled).abs().mean() > 0.01
        backend.networks.use_loras(())
        references = []
        for (prefix, _), tokenizer, encoder in zip(TEXT_PREFIXES, (parts.tokenizer, parts.tokenizer_2),
                                                   (parts.text_encoder, parts.text_encoder_2), strict=True):
            merged = merge_text_encoder_lora(encoder, text_weights()[prefix], prefix, weight)
            ids = tokenizer(["a red cat"], padding="max_length", max_length=tokenizer.model_max_length,
                            return_tensors="pt").input_ids
            with torch.no_grad():
                references.append(merged(ids, output_hidden_states=True))
        reference = torch.cat([output.hidden_states[-2][0] for output in references], dim=-1)
        assert (context - reference).abs().max() < 1e-4, weight
        assert (pooled - references[1][0][0]).abs().max() < 1e-4, weight
    # Asked again, each weight's cached encoding is its own.
    assert torch.equal(encodings(backend, model, ["xl_kohya:1"])[0], context)
    assert torch.equal(encodings(backend, model)[0], plain_context)
    assert backend.models.loads == loads


def test_kohya_sgm_and_diffusers_files_of_one_lora_render_alike(backend, model):
    plain = image(backend, model)
    kohya = image(backend, model, lora=["xl_kohya:0.8"])
    assert np.abs(kohya - plain).mean() > 1
    assert np.abs(kohya - image(backend, model, lora=["xl_diffusers:0.8"])).mean() <= 0.5
    assert np.abs(kohya - image(backend, model, lora=["xl_sgm:0.8"])).mean() <= 0.5


def test_sdxl_lora_matches_diffusers_pipeline(backend, model, files):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    ours = image(backend, model, lora=["xl_kohya:0.7"])
    pipe = StableDiffusionXLPipeline.from_pretrained(model)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(files["kohya"].parent), weight_name=files["kohya"].name, adapter_name="xl")
    pipe.set_adapters(["xl"], adapter_weights=[0.7])
    assert {"xl"} <= set(pipe.text_encoder.peft_config) & set(pipe.text_encoder_2.peft_config)
    theirs = pipe("a red cat", negative_prompt="blurry", num_inference_steps=3, guidance_scale=6.0, width=32,
                  height=32, generator=torch.Generator().manual_seed(5), output_type="np").images[0] * 255
    assert np.abs(ours - theirs).mean() <= 2, f"{np.abs(ours - theirs).mean()}/255 from diffusers"


def test_sdxl_embedding_token_resolves_in_both_encoders(backend, model, files):
    image(backend, model, prompt="a xlstyle cat")
    prompts = backend.prompts
    seen = []
    hooks = [encoder.register_forward_hook(lambda _m, args, _o: seen.append(args[0]))
             for encoder in prompts.text_encoders]
    try:
        with torch.inference_mode():
            prompts.encode([("a XLStyle cat", 1)])
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen) == 2
    for part, ids, tokenizer, encoder in zip(embeddings.SDXL_PARTS, seen, prompts.tokenizers, prompts.text_encoders,
                                             strict=True):
        wanted = tokenizer.convert_tokens_to_ids(embeddings.tokens_for("xlstyle", 2))
        assert ids[0, 2:4].tolist() == wanted  # start, a, then the two vectors, then cat
        assert torch.equal(encoder.get_input_embeddings().weight[wanted], files[part])
    assert np.abs(image(backend, model, prompt="a xlstyle cat") - image(backend, model, prompt="a cat")).mean() > 0.5


def problems(backend, model, **params) -> list[tuple[str, str]]:
    return [(p.param, p.message) for p in backend.validate(make_cell(model, **params).params)]


def test_sdxl_embedding_missing_clip_g_is_a_validation_error(backend, model, files):
    ((param, message),) = problems(backend, model, prompt="a half cat")
    assert param == "prompt" and str(files["no_g"]) in message and "no `clip_g` tensor" in message


def test_sd1_embedding_on_sdxl_names_the_file_and_both_sizes(backend, model, files):
    ((param, message),) = problems(backend, model, negative_prompt="oldstyle")
    assert param == "negative_prompt" and str(files["sd1"]) in message
    assert "64-wide vectors" in message
    assert "`clip_l` vectors 32 wide" in message and "`clip_g` vectors 40 wide" in message


def test_sdxl_embedding_on_an_sd1_model_is_refused(tmp_path, files):
    sd1 = DiffusersBackend(BackendContext(spec_dir=files["style"].parent.parent))
    message = " ".join(p.message for p in sd1.validate(make_cell("gridgen-tiny", prompt="a xlstyle cat").params))
    assert str(files["style"]) in message and "is an SDXL embedding" in message


GRID = """
grid:
  format: png
  params: {{model: {model}, steps: 3, width: 32, height: 32, sampler: Euler, prompt: a xlstyle cat}}
axes:
  lora: xl_kohya:0, xl_kohya:0.5, xl_kohya:1
  seed: 1, 2
"""


def test_gridgen_run_with_a_lora_weight_axis_on_sdxl(root, model, files, monkeypatch):
    import gridgen.backends.sd.render as module

    loads = []
    original = module.load_components
    monkeypatch.setattr(module, "load_components", lambda *a, **k: loads.append(a) or original(*a, **k))
    spec = write_spec(root / "spec", GRID.format(model=model), name="xl.yaml")
    out = root / "out"
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    assert len(loads) == 1
    entries = {e["key"]: e for e in map(json.loads, (out / "journal.jsonl").read_text().splitlines())}
    assert len(entries) == 6
    assert len({entries[f"xl_kohya_{w}/1"]["hash"] for w in ("0", "0_5", "1")}) == 3
    assert entries["xl_kohya_0_5/2"]["metadata"]["loras"] == [["loras/xl_kohya.safetensors", 0.5]]


def test_cells_with_a_lora_and_an_embedding_render_alone_as_in_a_batch(backend, model):
    cells = [make_cell(model, lora=["xl_kohya:0.5"], prompt=prompt, seed=seed)
             for prompt, seed in (("a xlstyle cat", 1), ("a dog", 2))]
    cells = [Cell(index=i, key=str(i), coords=(str(i),), params=cell.params) for i, cell in enumerate(cells)]
    assert len({backend.batch_key(cell.params) for cell in cells}) == 1
    together = [np.asarray(result.image, dtype=np.float64) for result in backend.render(cells)]
    for cell, batched in zip(cells, together, strict=True):
        (alone,) = backend.render([cell])
        assert np.abs(np.asarray(alone.image, dtype=np.float64) - batched).max() <= 1


def test_sdxl_a_lora_in_every_region_is_that_lora_on_the_whole_cell(backend, model):
    # Latent-calc regions apply their own tags: text encoded under both encoders' LoRA weights, UNet run under its own.
    common = {"regions": "Columns", "region_calc": "latent", "width": 64, "height": 32}
    plain = image(backend, model, prompt="a red cat BREAK a red cat", **common)
    whole = image(backend, model, prompt="a red cat BREAK a red cat", lora=["xl_kohya:0.8"], **common)
    everywhere = image(backend, model, prompt="a red cat <lora:xl_kohya:0.8> BREAK a red cat <lora:xl_kohya:0.8>",
                       **common)
    assert np.abs(everywhere - whole).max() <= 1 and np.abs(whole - plain).mean() > 1
    left = image(backend, model, prompt="a red cat <lora:xl_kohya:0.8> BREAK a red cat", **common)
    assert np.abs(left - whole).mean() > 0.5 and np.abs(left - plain).mean() > 0.5
