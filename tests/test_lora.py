"""LoRA: weights change the UNet output, A1111/kohya files load as diffusers converts them, weights as
an axis never reload the base model, keys keep LoRA sets apart, text-encoder weights change the text
embeddings as the merged weights would (cached per LoRA weight), and bad files are clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.adapters import lora
from gridgen.cli import main
from gridgen.errors import ModelError
from gridgen.tiny import TINY_MODEL_DIR
from tests.network_fixtures import (
    merge_text_encoder_lora,
    text_encoder_kohya_weights,
    unet_lora_weights,
    write_diffusers_lora,
    write_kohya_lora,
)
from tests.spec_helpers import write_spec


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("loras")
    weights = unet_lora_weights(seed=0)
    return {
        "root": root,
        "diffusers": write_diffusers_lora(root / "spec" / "loras" / "style", weights),
        "kohya": write_kohya_lora(root / "models" / "Lora" / "style_kohya.safetensors", weights),
        "other": write_diffusers_lora(root / "other", unet_lora_weights(seed=1)),
    }


def make_cell(index: int = 0, **params) -> Cell:
    base = {"prompt": "a red square", "negative_prompt": "", "seed": 1, "steps": 3, "cfg_scale": 7.0,
            "sampler": "Euler", "model": "gridgen-tiny"}
    return Cell(index=index, key=str(index), coords=(str(index),), params={**base, **params})


@pytest.fixture(scope="module")
def backend(files):
    instance = DiffusersBackend(BackendContext(spec_dir=files["root"] / "spec", models_dir=files["root"] / "models",
                                               device="cpu", cache_bytes=0))
    yield instance
    instance.close()


def image(backend, **params) -> np.ndarray:
    (result,) = backend.render([make_cell(**params)])
    return np.asarray(result.image, dtype=np.float64)


def test_parse_weights():
    assert lora.parse("style:0.5") == lora.LoraValue("style", 0.5)
    assert lora.parse("style") == lora.LoraValue("style", 1.0)
    assert lora.parse(r"C:\loras\style.safetensors") == lora.LoraValue(r"C:\loras\style.safetensors", 1.0)
    assert lora.parse("a:b:-1") == lora.LoraValue("a:b", -1.0)


def test_lora_weight_changes_the_unet_output_and_zero_is_no_lora(backend):
    plain = image(backend)
    assert np.array_equal(image(backend, lora=["style:0"]), plain)
    half, full = image(backend, lora=["style:0.5"]), image(backend, lora=["style:1"])
    assert np.abs(half - plain).mean() > 1.0 and np.abs(full - half).mean() > 1.0
    assert np.array_equal(image(backend), plain)  # switching the LoRA off restores the base model


def test_kohya_file_matches_the_diffusers_file(backend):
    diffusers_file = image(backend, lora=["style:0.8"])
    kohya_file = image(backend, lora=["style_kohya:0.8"])
    assert np.abs(diffusers_file - kohya_file).mean() <= 0.5


def test_several_loras_stack(backend, files):
    one = image(backend, lora=["style:0.7"])
    both = image(backend, lora=["style:0.7", f"{files['other'].parent}:0.7"])
    assert np.abs(one - both).mean() > 1.0
    # The last weight given for a file wins.
    assert np.array_equal(image(backend, lora=["style:0.2", "style:0.7"]), one)


def test_keys_keep_lora_sets_and_weights_apart(backend, files):
    plain = make_cell().params
    half, full = make_cell(lora=["style:0.5"]).params, make_cell(lora=["style:1"]).params
    other = make_cell(lora=[str(files["other"])]).params
    assert backend.load_key(half) == backend.load_key(full) != backend.load_key(plain)
    assert backend.load_key(other) != backend.load_key(half)
    assert len({backend.batch_key(p) for p in (plain, half, full, other)}) == 4
    assert "+ lora " in backend.describe_load(half) and str(files["diffusers"]) in backend.describe_load(half)


GRID = """
grid:
  format: png
  params: {model: gridgen-tiny, steps: 3, width: 32, height: 32, sampler: Euler}
axes:
  lora: style:0, style:0.5, style:1
  seed: 1, 2
"""


def test_weights_as_an_axis_load_the_model_once_and_record_the_lora(files, monkeypatch, capsys):
    import gridgen.backends.sd.render as module

    loads = []
    original = module.load_components
    monkeypatch.setattr(module, "load_components", lambda *a, **k: loads.append(a) or original(*a, **k))
    spec = write_spec(files["root"] / "spec", GRID)
    out = files["root"] / "out"
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    assert len(loads) == 1
    entries = {e["key"]: e for e in map(json.loads, (out / "journal.jsonl").read_text().splitlines())}
    assert len({entries[f"style_{w}/1"]["hash"] for w in ("0", "0_5", "1")}) == 3
    # recorded relative to the spec's folder, not as the machine's absolute path
    assert entries["style_0_5/2"]["metadata"]["loras"] == [["loras/style/pytorch_lora_weights.safetensors", 0.5]]


@pytest.fixture(scope="module")
def with_te(files):
    """A kohya LoRA with UNet and text-encoder weights, next to the spec as `with_te`."""
    from safetensors.torch import load_file, save_file

    path = files["root"] / "spec" / "loras" / "with_te.safetensors"
    save_file({**load_file(files["kohya"]), **text_encoder_kohya_weights()}, path)
    return path


def encoding(backend, lora_values=None, text="a red square") -> torch.Tensor:
    """The prompt's text embedding as the backend encodes it with the cell's LoRAs active (as in a render: adapters
    loaded during inference may only be switched during inference)."""
    with torch.inference_mode():
        backend.networks.use_loras(backend._lora_set(make_cell(lora=lora_values).params))
        return backend.prompts.encode([(text, 1)])[0].clone()


def test_text_encoder_lora_weights_change_the_embeddings_as_the_merged_weights_do(backend, with_te):
    assert [p for p in backend.validate(make_cell(lora=["with_te"]).params) if p.param == "lora"] == []
    image(backend)  # loads the model
    loads = backend.models.loads
    parts, tokenizer = backend._components, backend.prompts.tokenizer
    plain = encoding(backend)
    assert torch.equal(encoding(backend, ["with_te:0"]), plain)
    ids = tokenizer(["a red square"], padding="max_length", max_length=tokenizer.model_max_length,
                    return_tensors="pt").input_ids
    for weight in (0.5, 1.0, -0.7):
        ours = encoding(backend, [f"with_te:{weight}"])
        assert (ours - plain).abs().mean() > 0.05
        backend.networks.use_loras(())  # the reference encoder is a merged copy of the base weights
        merged = merge_text_encoder_lora(parts.text_encoder, text_encoder_kohya_weights(), "lora_te", weight)
        with torch.no_grad():
            output = merged(ids, output_hidden_states=True)
            reference = merged.final_layer_norm(output.hidden_states[-1])[0]
        assert (ours - reference).abs().max() < 1e-4, weight
    assert backend.models.loads == loads  # the weights switch adapters, never reload


def test_cached_embeddings_never_leak_between_lora_weights(backend, with_te):
    image(backend)
    first = {weight: encoding(backend, [f"with_te:{weight}"]) for weight in (0.3, 0.9)}
    plain = encoding(backend)
    # Asked again in another order, each weight gets its own encoding back (from the cache), never another's.
    assert torch.equal(encoding(backend, ["with_te:0.9"]), first[0.9])
    assert torch.equal(encoding(backend, ["with_te:0.3"]), first[0.3])
    assert torch.equal(encoding(backend), plain)
    assert not torch.equal(first[0.3], first[0.9])
    # A UNet-only LoRA leaves the text embeddings, and their cache entries, as they are.
    misses = backend.prompts.cache.misses
    assert torch.equal(encoding(backend, ["style:0.5"]), plain) and backend.prompts.cache.misses == misses


def test_a_text_encoder_only_lora_changes_the_image_through_the_prompt_alone(backend, files):
    from safetensors.torch import save_file

    save_file(text_encoder_kohya_weights(seed=2), files["root"] / "spec" / "loras" / "te_only.safetensors")
    plain = image(backend)
    assert np.array_equal(image(backend, lora=["te_only:0"]), plain)
    assert np.abs(image(backend, lora=["te_only:1"]) - plain).mean() > 1.0
    assert not torch.equal(encoding(backend, ["te_only:1"]), encoding(backend))


def test_text_encoder_lora_image_matches_diffusers_load_lora_weights(backend, with_te):
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    ours = image(backend, lora=["with_te:0.6"], negative_prompt="blurry", width=32, height=32)
    pipe = StableDiffusionPipeline.from_pretrained(TINY_MODEL_DIR, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(with_te.parent), weight_name=with_te.name, adapter_name="with_te")
    pipe.set_adapters(["with_te"], adapter_weights=[0.6])
    assert "with_te" in pipe.text_encoder.peft_config  # diffusers applied the text-encoder half too
    theirs = pipe("a red square", negative_prompt="blurry", num_inference_steps=3, guidance_scale=7.0, width=32,
                  height=32, generator=torch.Generator().manual_seed(1), output_type="np").images[0] * 255
    assert np.abs(ours - theirs).mean() <= 2 and np.abs(ours - image(backend, width=32, height=32)).mean() > 1


PROMPT_TAG_GRID = """
grid:
  format: png
  params: {model: gridgen-tiny, steps: 3, width: 32, height: 32, sampler: Euler}
axes:
  prompt: a red square <lora:style:0.5> || a red square || <LORA:nope> a red square
"""


def test_a1111_prompt_tags_become_the_lora_param(files, capsys):
    spec = write_spec(files["root"] / "spec", PROMPT_TAG_GRID, name="tags.yaml")
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert f"{spec}:5:" in err and "lora 'nope' not found" in err  # located at the prompt that holds the tag
    spec.write_text(spec.read_text().replace(" || <LORA:nope> a red square", ""))
    out = files["root"] / "tags-out"
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    entries = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    tagged = next(e for e in entries if e["params"].get("lora"))
    assert tagged["params"]["prompt"] == "a red square" and tagged["params"]["lora"] == ["style:0.5"]
    assert tagged["metadata"]["loras"] == [["loras/style/pytorch_lora_weights.safetensors", 0.5]]
    assert len({e["hash"] for e in entries}) == 2


# Bad input


def messages(backend, **params) -> list[str]:
    return [p.message for p in backend.validate(make_cell(**params).params) if p.param == "lora"]


def test_missing_lora_names_where_it_looked(backend, files):
    (message,) = messages(backend, lora=["nope:0.5"])
    assert "lora 'nope' not found" in message
    assert str(files["root"] / "spec" / "loras" / "nope.safetensors") in message
    assert str(files["root"] / "models" / "Lora" / "nope.safetensors") in message


def test_corrupt_and_non_lora_files_are_validation_errors(backend, files):
    broken = files["root"] / "spec" / "loras" / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    (message,) = messages(backend, lora=["broken"])
    assert f"cannot read LoRA file {broken}" in message
    (message,) = messages(backend, lora=[str(TINY_MODEL_DIR / "unet" / "diffusion_pytorch_model.safetensors")])
    assert "holds no LoRA weights" in message
    empty = files["root"] / "spec" / "loras" / "emptydir"
    empty.mkdir()
    (message,) = messages(backend, lora=["emptydir"])
    assert "pytorch_lora_weights" in message


def test_a_lora_for_another_model_fails_with_the_file_named(backend, files):
    mismatched = write_kohya_lora(files["root"] / "spec" / "loras" / "wide.safetensors",
                                  {k: v.repeat(1, 2) if "lora_A" in k else v for k, v in unet_lora_weights().items()})
    assert messages(backend, lora=["wide"]) == []  # the header looks like a LoRA; only loading can tell
    with pytest.raises(ModelError, match=str(Path(mismatched))):
        image(backend, lora=["wide"])
