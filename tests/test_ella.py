"""ELLA: the connector's official layout, checkpoint checks, and grids that switch it on and off.

End-to-end tests run the embedded tiny model with a tiny random T5 encoder and an ELLA connector
built at small widths (its context width matches the tiny UNet's cross-attention), both saved to
disk by fixtures, so nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from gridgen.backends import BackendContext
from gridgen.backends.base import Cell
from gridgen.backends.diffusers_backend import DiffusersBackend
from gridgen.backends.sd.models import locate
from gridgen.backends.sd.text import ella_setup
from gridgen.backends.sd.text.ella import EllaModel, check_checkpoint, load_ella, save_single_file
from gridgen.backends.sd.text.ella_context import EllaContext
from gridgen.errors import ModelError, SpecError
from gridgen.params import Registry, coerce
from gridgen.runner import RunOptions, execute, prepare
from gridgen.tiny import TINY_MODEL_DIR
from tests.spec_helpers import write_spec

WORDS = ("a red blue green yellow square circle triangle on the gray white background with small large "
         "dense prompt many words and of in").split()
TINY_ELLA = {"time_channel": 32, "time_embed_dim": 48, "width": 64, "layers": 2, "heads": 4, "num_latents": 64,
             "input_dim": 32}
SHORT = "a red square"
LONG = "a large red square and a small blue circle on the gray background with many green triangles"


def official_layout() -> dict[str, tuple[int, ...]]:
    """ella-sd1.5-tsc-t5xl.safetensors: 93 tensors, written out from the release's module description."""
    layout = {
        "time_embedding.linear_1.weight": (768, 320), "time_embedding.linear_1.bias": (768,),
        "time_embedding.linear_2.weight": (768, 768), "time_embedding.linear_2.bias": (768,),
        "connector.latents": (64, 768),
        "connector.time_aware_linear.weight": (768, 768), "connector.time_aware_linear.bias": (768,),
        "connector.proj_in.weight": (768, 2048), "connector.proj_in.bias": (768,),
    }
    for block in range(6):
        prefix = f"connector.perceiver_blocks.{block}."
        layout |= {
            prefix + "attn.in_proj_weight": (3 * 768, 768), prefix + "attn.in_proj_bias": (3 * 768,),
            prefix + "attn.out_proj.weight": (768, 768), prefix + "attn.out_proj.bias": (768,),
            prefix + "mlp.c_fc.weight": (3072, 768), prefix + "mlp.c_fc.bias": (3072,),
            prefix + "mlp.c_proj.weight": (768, 3072), prefix + "mlp.c_proj.bias": (768,),
        }
        for norm in ("ln_1", "ln_2", "ln_ff"):
            layout |= {prefix + f"{norm}.linear.weight": (1536, 768), prefix + f"{norm}.linear.bias": (1536,)}
    return layout


def build_tiny_t5(folder: Path) -> Path:
    """A random 2-layer T5 encoder and a word-level T5 tokenizer built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(f"\u2581{word}", -1.0) for word in WORDS]
    backend = Tokenizer(models.Unigram(vocab, unk_id=2))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer = T5TokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                extra_ids=0)
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, relative_attention_max_distance=32,
                      feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1)
    T5EncoderModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def _fresh_resolution():
    locate.resolve_model.cache_clear()
    locate.read_model_info.cache_clear()
    ella_setup._checked.cache_clear()
    ella_setup._t5_width.cache_clear()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A models folder holding the tiny ELLA (under the official file name) and the tiny T5."""
    root = tmp_path_factory.mktemp("ella-models")
    t5 = build_tiny_t5(root / "T5" / "t5-tiny")
    torch.manual_seed(1)
    (root / "ELLA").mkdir()
    checkpoint = root / "ELLA" / ella_setup.ELLA_FILE
    save_single_file(EllaModel(**TINY_ELLA), checkpoint)
    return {"models": root, "t5": t5, "ella": checkpoint}


@pytest.fixture(scope="module")
def backend(files):
    instance = DiffusersBackend(BackendContext(spec_dir=files["models"], models_dir=files["models"], device="cpu",
                                               cache_bytes=0))
    yield instance
    instance.close()


def make_cell(index: int = 0, **params) -> Cell:
    base = {"prompt": SHORT, "negative_prompt": "", "seed": 1, "steps": 4, "cfg_scale": 7.0, "sampler": "Euler",
            "model": "gridgen-tiny", "ella": "on", "ella_text_encoder": "t5-tiny"}
    return Cell(index=index, key=str(index), coords=(str(index),), params={**base, **params})


def render(backend, cells: list[Cell]) -> dict[int, np.ndarray]:
    return {r.cell.index: np.asarray(r.image, dtype=np.float64) for r in backend.render(cells)}


class Recorder:
    """Records the first input (or the `encoder_hidden_states`) of every call to a module."""

    def __init__(self, module, keyword: str | None = None):
        self.seen: list[torch.Tensor] = []
        pick = (lambda args, kwargs: kwargs[keyword]) if keyword else (lambda args, kwargs: args[0])
        self.handle = module.register_forward_hook(lambda _m, args, kwargs, _o: self.seen.append(pick(args, kwargs)),
                                                   with_kwargs=True)

    def __enter__(self):
        return self.seen

    def __exit__(self, *_):
        self.handle.remove()


# The connector and its checkpoint


def test_official_sizes_have_the_release_layout_and_round_trip_strictly(tmp_path):
    model = EllaModel()
    found = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert found == official_layout()
    assert len(found) == 93
    assert sum(t.numel() for t in model.state_dict().values()) == 66_820_608
    path = tmp_path / "ella.safetensors"
    save_single_file(model, path)
    loaded = load_ella(path, torch.device("cpu"), torch.float32)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    text, timestep = torch.randn(2, 7, 2048), torch.tensor(421.0)
    with torch.inference_mode():
        assert loaded(text, timestep).shape == (2, 64, 768)
        assert torch.allclose(loaded(text, timestep), model.eval()(text, timestep), atol=1e-5)


def test_a_file_without_gridgen_metadata_loads_at_the_official_sizes(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "official-style.safetensors"
    save_file({k: v.contiguous() for k, v in EllaModel().state_dict().items()}, str(path))  # no metadata at all
    assert check_checkpoint(path)["width"] == 768 and check_checkpoint(path)["input_dim"] == 2048


def test_save_pretrained_folders_load_too(tmp_path):
    model = EllaModel(**TINY_ELLA)
    model.save_pretrained(tmp_path / "ella")
    assert EllaModel.from_pretrained(tmp_path / "ella").config["num_latents"] == 64
    loaded = load_ella(tmp_path / "ella", torch.device("cpu"), torch.float32)
    assert torch.equal(loaded.connector.latents, model.connector.latents)


@pytest.mark.parametrize(("damage", "named"), [
    ("rename", "connector.proj_in.weight"),
    ("reshape", "connector.perceiver_blocks.1.mlp.c_fc.weight"),
    ("extra", "connector.proj_out.weight"),
])
def test_a_checkpoint_of_the_wrong_layout_names_the_first_mismatching_key(tmp_path, damage, named):
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in EllaModel(**TINY_ELLA).state_dict().items()}
    if damage == "rename":
        tensors["proj_in.weight"] = tensors.pop("connector.proj_in.weight")
    elif damage == "reshape":
        tensors[named] = torch.zeros(3, 3)
    else:
        tensors[named] = torch.zeros(4, 4)
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path), metadata={"gridgen_ella_config": json.dumps(TINY_ELLA)})
    with pytest.raises(ModelError, match=named.replace(".", r"\.")):
        check_checkpoint(path)
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, device="cpu"))
    problems = backend.validate({"model": "gridgen-tiny", "ella": str(path), "ella_text_encoder": "missing"})
    assert any(p.param == "ella" and named in p.message for p in problems)


def test_rows_of_different_lengths_read_only_their_own_tokens():
    ella = EllaModel(**TINY_ELLA).eval()
    features = [torch.randn(5, 32), torch.randn(9, 32), torch.randn(1, 32)]
    context = EllaContext(ella, features)
    with torch.inference_mode():
        rows = context(torch.tensor(500))
        for row, alone in zip(rows, features, strict=True):
            assert torch.allclose(row, ella(alone.unsqueeze(0), torch.tensor(500))[0], atol=1e-5)
        padded = ella(context.text, torch.tensor(500))  # what the padding would do if it were read
        assert not torch.allclose(rows[0], padded[0], atol=1e-3)


def test_ella_plus_clip_context_is_ella_first_then_clip_141_tokens():
    ella = EllaModel(**TINY_ELLA).eval()
    clip = torch.randn(2, 77, 64)
    features = [torch.randn(5, 32), torch.randn(9, 32)]
    context = EllaContext(ella, features, clip)
    with torch.inference_mode():
        rows = context(torch.tensor(500))
        assert rows.shape == (2, 141, 64)
        assert torch.equal(rows[:, 64:], clip)
        assert torch.allclose(rows[1, :64], ella(features[1].unsqueeze(0), torch.tensor(500))[0], atol=1e-5)


# Validation


def test_clear_errors_for_a_missing_t5_folder_and_a_missing_checkpoint(tmp_path, files):
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, device="cpu"))
    problems = backend.validate({"model": "gridgen-tiny", "ella": "on", "ella_text_encoder": "no-such-t5"})
    by_param = {p.param: p.message for p in problems}
    assert "no-such-t5" in by_param["ella_text_encoder"] and "T5 folder not found" in by_param["ella_text_encoder"]
    assert ella_setup.ELLA_FILE in by_param["ella"] and "never downloads" in by_param["ella"]
    (tmp_path / "empty").mkdir()
    problems = backend.validate({"model": "gridgen-tiny", "ella": str(files["ella"]), "ella_text_encoder": "empty"})
    assert [p.param for p in problems] == ["ella_text_encoder"] and "no config.json" in problems[0].message


def test_ella_is_rejected_on_a_model_that_is_not_sd15(tmp_path, files):
    model = tmp_path / "sd2-like"
    shutil.copytree(TINY_MODEL_DIR, model)
    config_path = model / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "cross_attention_dim": 1024}))
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, device="cpu"))
    cell = {"model": str(model), "ella": str(files["ella"]), "ella_text_encoder": str(files["t5"])}
    (problem,) = backend.validate(cell)
    assert problem.param == "ella" and "Stable Diffusion 1.5 models only" in problem.message
    assert backend.validate({**cell, "ella": "off"}) == []


def test_a_t5_of_the_wrong_width_is_rejected(tmp_path, files):
    other = tmp_path / "t5-wide"
    shutil.copytree(files["t5"], other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "d_model": 2048}))
    backend = DiffusersBackend(BackendContext(spec_dir=tmp_path, device="cpu"))
    cell = {"model": "gridgen-tiny", "ella": str(files["ella"]), "ella_text_encoder": str(other)}
    (problem,) = backend.validate(cell)
    assert problem.param == "ella_text_encoder" and "2048" in problem.message


def test_ella_settings_are_params_with_clear_value_errors(tmp_path):
    registry = Registry()
    assert [coerce(registry.lookup("ella"), v) for v in (True, "off", "ON", "my/ella.safetensors")] == \
        ["on", "off", "on", "my/ella.safetensors"]
    assert coerce(registry.lookup("T5 token length"), " Flexible ") == "flexible"
    assert coerce(registry.lookup("token_length"), 128) == "128"
    assert coerce(registry.lookup("ella mode"), "ELLA + CLIP") == "ella+clip"
    spec = write_spec(tmp_path, """
        grid:
          params: {model: gridgen-tiny, steps: 2}
        axes:
          token_length: 128, flexible, 0
          ella_mode: ella, ella + clip, clip
    """)
    with pytest.raises(SpecError) as caught:
        prepare(spec, RunOptions(out=tmp_path / "out"))
    text = str(caught.value)
    assert "token_length '0'" in text and "flexible, or a whole number from 1 to 512" in text
    assert "ella_mode 'clip'" in text


# Rendering


def test_on_and_off_differ_and_ella_cells_do_not_share_a_batch_with_clip_cells(backend):
    on, off = make_cell(0), make_cell(1, ella="off")
    assert backend.batch_key(on.params) != backend.batch_key(off.params)
    assert backend.batch_key(on.params) != backend.batch_key({**on.params, "ella_mode": "ella+clip"})
    images = {**render(backend, [on]), **render(backend, [off])}
    assert np.abs(images[0] - images[1]).mean() > 2.0


def test_the_unet_sees_ellas_context_recomputed_every_step(backend):
    list(backend.render([make_cell()]))
    with Recorder(backend._components.unet, "encoder_hidden_states") as contexts, \
            Recorder(backend.ella._connector[1]) as connector_inputs:
        list(backend.render([make_cell(ella_mode="ella"), make_cell(1, ella_mode="ella", cfg_scale=1.0)]))
    assert len(contexts) == 4 and all(c.shape == (3, 64, 64) for c in contexts)  # 2 cond rows + 1 guided uncond
    assert len(connector_inputs) == 4  # one connector pass per step serves both halves of the batch
    assert not torch.equal(contexts[0], contexts[1])  # the TSC depends on the timestep
    clip_tokens = backend._components.tokenizer.model_max_length
    with Recorder(backend._components.unet, "encoder_hidden_states") as contexts:
        list(backend.render([make_cell(ella_mode="ella+clip")]))
    assert contexts[0].shape[1] == 64 + clip_tokens
    clip = backend.prompts.encode([(SHORT, 1)])
    assert torch.equal(contexts[0][0, 64:], clip[0].to(contexts[0]))  # ELLA's tokens first, then CLIP's


def test_flexible_token_length_changes_the_features_the_tsc_sees(backend):
    list(backend.render([make_cell()]))
    connector = backend.ella._connector[1]
    with Recorder(connector) as fixed:
        images = render(backend, [make_cell(0, token_length="128")])
    with Recorder(connector) as flexible:
        images |= render(backend, [make_cell(1, token_length="flexible")])
    prompt_tokens = len(backend.ella._text[1].tokenizer(SHORT).input_ids)
    assert fixed[0].shape[1] == 128 and flexible[0].shape[1] == prompt_tokens < 128
    # The prompt's own tokens read the same; 128 adds the padding positions' features behind them.
    assert torch.allclose(fixed[0][0, :prompt_tokens], flexible[0][0], atol=1e-5)
    assert np.abs(images[0] - images[1]).mean() > 0.5
    short_len = render(backend, [make_cell(2, token_length="4")])
    assert np.abs(short_len[2] - images[0]).mean() > 0.5


@pytest.mark.parametrize("mode", ["ella", "ella+clip"])
def test_mixed_length_prompts_in_one_batch_match_each_alone(backend, mode):
    cells = [make_cell(0, prompt=SHORT, token_length="flexible", ella_mode=mode),
             make_cell(1, prompt=LONG, token_length="flexible", negative_prompt="blue", seed=2, ella_mode=mode),
             make_cell(2, prompt=LONG, token_length="128", seed=3, cfg_scale=1.0, ella_mode=mode),
             make_cell(3, prompt="", token_length="flexible", seed=4, cfg_scale=4.0, ella_mode=mode)]
    assert len({repr(backend.batch_key(c.params)) for c in cells}) == 1
    together = render(backend, cells)
    for cell in cells:
        alone = render(backend, [cell])[cell.index]
        assert np.abs(together[cell.index] - alone).mean() <= 0.5, cell.params


def test_t5_features_are_encoded_once_per_prompt_and_token_length(backend):
    list(backend.render([make_cell(prompt="green circle", token_length="64")]))
    features = backend.ella._text[1]
    before = features.cache.misses
    list(backend.render([make_cell(prompt="green circle", token_length="64", seed=s) for s in range(3)]))
    assert features.cache.misses == before
    list(backend.render([make_cell(prompt="green circle", token_length="flexible")]))
    assert features.cache.misses == before + 1


def test_the_bundled_axes_teach_every_value():
    from gridgen.resources import data_dir

    axes = yaml.safe_load((data_dir("axes") / "ella.yaml").read_text(encoding="utf-8"))["axes"]
    assert list(axes) == ["ella", "token_length", "ella_mode"]
    assert "upsample" in axes["ella"]["description"]
    for axis in axes.values():
        assert len(axis["description"]) > 200
        assert all(len(value["description"]) > 80 for value in axis["values"].values())


def test_a_grid_with_the_ella_axes_records_ella_in_each_image(tmp_path, files):
    spec = write_spec(tmp_path, """
        include: axes/ella.yaml
        grid:
          params: {model: gridgen-tiny, steps: 3, sampler: DPM++ 2M, ella_text_encoder: t5-tiny,
                   prompt: a large red square on the gray background}
    """)
    out = tmp_path / "out"
    options = RunOptions(out=out, models_dir=str(files["models"]), device="cpu", batch_size=8)
    execute(prepare(spec, options), options, show_progress=False)
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    assert len(journal) == 16
    images = {tuple(e["coords"]): np.asarray(Image.open(out / e["file"]), dtype=np.float64) for e in journal}
    for entry in journal:
        recorded = json.loads(Image.open(out / entry["file"]).text["gridgen"])["metadata"]
        if entry["params"]["ella"] == "off":
            assert recorded["ella"] == "off"
        else:
            # recorded relative to the models folder: an image does not tell where the machine keeps its files
            assert recorded["ella_checkpoint"] == f"ELLA/{ella_setup.ELLA_FILE}"
            assert recorded["ella_text_encoder"] == "T5/t5-tiny"
            assert recorded["token_length"] == entry["params"]["token_length"]
            assert recorded["ella_mode"] == entry["params"]["ella_mode"]
    off = [image for coords, image in images.items() if coords[0] == "off"]
    assert all(np.array_equal(off[0], image) for image in off)  # ELLA settings do nothing while it is off
    on = [image for coords, image in images.items() if coords[0] == "on"]
    assert min(np.abs(on[0] - image).mean() for image in on[1:]) > 0.1
    assert np.abs(on[0] - off[0]).mean() > 2.0
