"""`gridgen serve --allow-runs` against hostile submissions: every file a run can read lies under the
root or the models folder, a spec that asks for too much is answered 413 without holding the server,
and one broken grid.json does not take the index down."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from gridgen.viewer.state import get_state
from tests.test_viewer import TOKEN, auth, make_app, rendered, root, spec_text  # noqa: F401 (fixtures)


def _submit(client, text: str, name: str):
    return client.post("/api/runs", json={"spec": text, "filename": "p.yaml", "name": name}, headers=auth())


@pytest.fixture
def runs_client(root):  # noqa: F811
    app = make_app(root, token=TOKEN, allow_runs=True)
    yield app.test_client()
    get_state(app).shutdown()


def _refused_for_leaving_the_root(response, name: str) -> None:
    assert response.status_code == 422, (name, response.get_json())
    problems = response.get_json()["problems"]
    assert any("outside the root" in p or "not found under the root" in p or "leads outside" in p
               or "not a folder under the root" in p for p in problems), (name, problems)
    assert all(p.startswith("p.yaml:") for p in problems), (name, problems)


def test_paths_hidden_in_choice_params_prompts_and_models_dir_stay_inside_the_root(root, runs_client,  # noqa: F811
                                                                                  tmp_path):
    outside = tmp_path / "outside"
    (outside / "model").mkdir(parents=True)
    (outside / "model" / "model_index.json").write_text("{}")
    for name in ("up.pth", "big-lama.pt", "ella.safetensors", "style.safetensors"):
        (outside / name).write_bytes(b"x")
    base = spec_text()
    params = "model: gridgen-tiny"
    cases = {
        "inpainter-folder": base.replace(params, f"{params}, sam_prompt: point 8 8, inpainter: {outside / 'model'}"),
        "inpainter-lama": base.replace(params, f"{params}, sam_prompt: point 8 8, "
                                               f"inpainter: 'lama:{outside / 'big-lama.pt'}'"),
        "outpaint-lama": base.replace(params, f"{params}, outpaint_fill: 'lama:{outside / 'big-lama.pt'}'"),
        "upscaler-x4": base.replace(params, f"{params}, upscaler: 'sd-x4:{outside / 'model'}'"),
        "upscaler-file": base.replace(params, f"{params}, upscaler: {outside / 'up.pth'}"),
        "upscaler-hires": base.replace(params, f"{params}, upscaler: 'hires:{outside / 'up.pth'}'"),
        "upscaler-axis": base + f"  upscaler: lanczos || sd-upscale || hires:{outside / 'up.pth'}\n",
        "ella": base.replace(params, f"{params}, ella: {outside / 'ella.safetensors'}"),
        "lora-tag": base.replace("prompt: a red circle", f"prompt: a red circle <lora:{outside / 'style'}:0.5>"),
    }
    for name, text in cases.items():
        _refused_for_leaving_the_root(_submit(runs_client, text, name), name)


def test_models_dir_and_wildcard_files_outside_the_root_are_refused(root, runs_client, tmp_path):  # noqa: F811
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "wildcards").mkdir(parents=True)
    (elsewhere / "wildcards" / "secret.txt").write_text("the secret line\n")
    secret_spec = spec_text().replace("prompt: a red circle", "prompt: a __secret__ circle")
    moved = secret_spec.replace("grid:\n", f"grid:\n  models_dir: {elsewhere}\n")
    _refused_for_leaving_the_root(_submit(runs_client, moved, "moved"), "models_dir")
    # a wildcards/ entry under the root that links elsewhere, reached directly or from another wildcard's line
    (root / "wildcards").mkdir()
    os.symlink(elsewhere / "wildcards" / "secret.txt", root / "wildcards" / "secret.txt")
    _refused_for_leaving_the_root(_submit(runs_client, secret_spec, "linked"), "linked wildcard")
    (root / "wildcards" / "inner.txt").write_text("__secret__\n")
    nested = spec_text().replace("prompt: a red circle", "prompt: a __inner__ circle")
    _refused_for_leaving_the_root(_submit(runs_client, nested, "nested"), "nested wildcard")
    assert not any("the secret line" in p.read_text(errors="replace") for p in root.rglob("*.json"))
    # an embedding named in a prompt, found in the root's embeddings/ but linking elsewhere
    (root / "embeddings").mkdir()
    (elsewhere / "secret-style.pt").write_bytes(b"x")
    os.symlink(elsewhere / "secret-style.pt", root / "embeddings" / "secret-style.pt")
    styled = spec_text().replace("prompt: a red circle", "prompt: a red circle in secret-style")
    _refused_for_leaving_the_root(_submit(runs_client, styled, "styled"), "linked embedding")
    # a wildcard file that really is under the root is fine
    (root / "wildcards" / "secret.txt").unlink()
    (root / "wildcards" / "secret.txt").write_text("a public line\n")
    assert _submit(runs_client, nested, "inside").status_code == 201


HOSTILE = {
    "alias-bomb": "a0: &a0 [x, x, x, x, x, x, x, x, x]\n"
                  + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)),
    "huge-range": "axes:\n  seed: 1-100000000\n",
    "huge-fill": "axes:\n  seed: 1, 2, ..., 100000000\n",
    "many-axes": "axes:\n" + "".join(f"  v{i}:\n    values:\n      a: {{params: {{seed: 1}}}}\n"
                                     f"      b: {{params: {{seed: 2}}}}\n" for i in range(60)),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_specs_asking_too_much_get_413_quickly_with_located_problems(root, runs_client, name):  # noqa: F811
    started = time.monotonic()
    response = _submit(runs_client, HOSTILE[name] + "grid:\n  params: {model: gridgen-tiny}\n", name)
    assert response.status_code == 413, response.get_json()
    problems = response.get_json()["problems"]
    assert problems and all(p.startswith("p.yaml:") and p.split(":")[1].isdigit() for p in problems), problems
    assert time.monotonic() - started < 60
    assert not list(root.glob(".gridgen-spec-*"))
    assert runs_client.get("/api/runs", headers=auth()).get_json()["runs"] == []


def test_a_check_past_its_memory_or_time_limit_is_killed_and_leaves_no_temp_file(root):  # noqa: F811
    app = make_app(root, token=TOKEN, allow_runs=True)
    client = app.test_client()
    state = get_state(app)
    state.check_memory_mb = 1  # any Python process is larger: the child is killed at the first look
    response = _submit(client, spec_text(), "memory")
    assert response.status_code == 413 and "MB of memory" in response.get_json()["problems"][0]
    assert not list(root.glob(".gridgen-spec-*"))
    state.check_memory_mb, state.check_timeout_s = 4096, 0.001
    response = _submit(client, spec_text(), "time")
    assert response.status_code == 413 and "longer than" in response.get_json()["problems"][0]
    assert not list(root.glob(".gridgen-spec-*"))
    state.check_timeout_s = 120
    assert _submit(client, spec_text(), "fine").status_code == 201  # the server still answers
    state.shutdown()
    (root / ".gridgen-spec-0123.yaml").write_text("left by a server killed mid-check")
    get_state(make_app(root, token=TOKEN, allow_runs=True)).shutdown()
    assert not list(root.glob(".gridgen-spec-*"))


@pytest.mark.parametrize("broken", [
    '{"progress": {"total": "many"}}', '{"progress": {"done": [1]}}', '{"axes": 5}', '{"progress": {"total": 1e999}}',
    "[" * 100_000 + "]" * 100_000, "not json", '"a string"',
])
def test_one_malformed_grid_json_is_marked_broken_and_the_others_listed(root, rendered, broken):  # noqa: F811
    shutil.copytree(rendered, root / "bad")
    (root / "bad" / "grid.json").write_text(broken)
    app = make_app(root)
    client = app.test_client()
    grids = {g["id"]: g for g in client.get("/api/grids").get_json()["grids"]}
    assert grids["tiny"]["error"] is None and grids["tiny"]["done"] == 4
    assert grids["bad"]["error"] and "grid.json" in grids["bad"]["error"]
    page = client.get("/")
    assert page.status_code == 200 and "tiny" in page.get_data(as_text=True)
    get_state(app).shutdown()

