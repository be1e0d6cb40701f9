"""`gridgen serve` through Flask's test client: every route, every security rule, live progress
over Server-Sent Events while a tiny grid renders, favourites, and the run queue across restarts.

Grids are real `gridgen-tiny` renders (32x32, 3 steps); one is rendered per module and copied into
each test's root.
"""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import pytest

from gridgen.cli import main
from gridgen.errors import GridError
from gridgen.runner import RunOptions, execute, prepare
from gridgen.viewer import create_app
from gridgen.viewer.db import DB_NAME
from gridgen.viewer.live import journal_events
from gridgen.viewer.server import check_bind, is_loopback
from gridgen.viewer.state import get_state
from tests.network_fixtures import unet_lora_weights, write_kohya_lora

TOKEN = "s3cret-token"


def spec_text(title: str = "tiny live", seeds: int = 4, extra_axes: str = "") -> str:
    values = ", ".join(str(i) for i in range(1, seeds + 1))
    return textwrap.dedent(f"""\
        grid:
          title: {title}
          format: png
          params: {{model: gridgen-tiny, steps: 3, width: 32, height: 32, sampler: Euler, prompt: a red circle}}
        axes:
          seed: {values}
        """) + extra_axes


def render(out: Path, text: str, first_batch_only: bool = False, spec_dir: Path | None = None) -> None:
    """Render `text` to `out` (batches of one cell); with first_batch_only, stop after one cell."""
    spec_dir = spec_dir or out.parent.parent
    spec = spec_dir / f"{out.name}.yaml"
    spec.write_text(text, encoding="utf-8")
    options = RunOptions(out=out, batch_size=1)
    stop = threading.Event()
    if first_batch_only:
        stop.set()
    execute(prepare(spec, options), options, show_progress=False, stop=stop)


def resume_in_thread(out: Path, text: str, spec_dir: Path | None = None) -> threading.Thread:
    thread = threading.Thread(target=render, args=(out, text, False, spec_dir), daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """A finished 4-cell grid, rendered once: copy it, do not change it."""
    base = tmp_path_factory.mktemp("rendered")
    (base / "root").mkdir()
    render(base / "root" / "tiny", spec_text())
    return base / "root" / "tiny"


@pytest.fixture
def root(tmp_path, rendered) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(rendered, root / "tiny")
    return root


def make_app(root: Path, **kwargs):
    app = create_app(root, **{"start_worker": False, **kwargs})
    app.config["TESTING"] = True
    return app


@pytest.fixture
def app(root):
    app = make_app(root)
    yield app
    get_state(app).shutdown()


@pytest.fixture
def client(app):
    return app.test_client()


def auth(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


# ---- index and grid pages ----------------------------------------------------------------------


def test_index_lists_every_grid_with_progress_thumbs_and_time(root, rendered):
    shutil.copytree(rendered, root / "a" / "b" / "nested")
    shutil.copytree(rendered, root / "a" / "b" / "c" / "d" / "too-deep")  # 5 levels down: not searched
    shutil.copytree(rendered, root / ".hidden" / "secret-grid")
    grid_json = root / "a" / "b" / "nested" / "grid.json"
    data = json.loads(grid_json.read_text())
    data["title"] = "<script>alert(1)</script> nested"
    grid_json.write_text(json.dumps(data))
    app = make_app(root)
    client = app.test_client()
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "tiny live" in html and "4 cells" in html and "4 / 4 rendered" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; nested" in html and "<script>alert" not in html
    assert 'href="/g/tiny/"' in html and 'href="/g/a/b/nested/"' in html
    assert "too-deep" not in html and "secret-grid" not in html
    assert html.count('src="/g/tiny/thumbs/') == 4
    assert "<time" in html
    grids = client.get("/api/grids").get_json()["grids"]
    assert sorted(g["id"] for g in grids) == ["a/b/nested", "tiny"]
    tiny = next(g for g in grids if g["id"] == "tiny")
    assert (tiny["total"], tiny["done"], tiny["running"]) == (4, 4, False)
    assert tiny["axes"] == ["seed"] and tiny["modified"] > 0 and tiny["modified_iso"].startswith("20")
    for thumb in tiny["thumbs"]:
        assert client.get(thumb["href"]).status_code == 200
    get_state(app).shutdown()


def test_grid_page_is_the_static_page_plus_the_live_script(client, root):
    redirect = client.get("/g/tiny")
    assert redirect.status_code == 308 and redirect.headers["Location"].endswith("/g/tiny/")
    page = client.get("/g/tiny/")
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    html = page.get_data(as_text=True)
    static = (root / "tiny" / "index.html").read_text()
    assert html.startswith(static[: static.lower().rfind("</body>")])
    assert '<script id="gridgen-viewer" type="application/json">' in html
    config = json.loads(html.split('type="application/json">', 1)[1].split("</script>", 1)[0])
    assert config["grid"] == "tiny" and config["events"] == "/live/tiny"
    assert '<script src="/_viewer/viewer.js?v=' in html and html.rstrip().endswith("</html>")
    assert client.get("/g/tiny/index.html").get_data(as_text=True) == html
    for name in ("data.js", "grid.json", "static/explorer.js", "static/explorer.css", "images/1.png",
                 "thumbs/1.webp", "spec.yaml", "journal.jsonl"):
        response = client.get(f"/g/tiny/{name}")
        assert response.status_code == 200, name
        assert response.data == (root / "tiny" / name).read_bytes()
    assert client.get("/g/tiny/images").status_code == 404  # no folder listings
    assert client.get("/g/tiny/images/").status_code == 404
    assert client.get("/g/tiny/nope.png").status_code == 404
    assert client.get("/_viewer/viewer.css").status_code == 200
    assert client.get("/_viewer/explorer.js").status_code == 404  # only the viewer's own assets there
    assert "Content-Security-Policy" in page.headers and page.headers["X-Content-Type-Options"] == "nosniff"


def test_root_folder_itself_can_be_a_grid(rendered, tmp_path):
    root = tmp_path / "single"
    shutil.copytree(rendered, root)
    app = make_app(root)
    client = app.test_client()
    assert [g["id"] for g in client.get("/api/grids").get_json()["grids"]] == [""]
    page = client.get("/g/")
    assert page.status_code == 200 and '"events": "/live/"' in page.get_data(as_text=True)
    assert client.get("/g/images/1.png").status_code == 200
    get_state(app).shutdown()


def test_files_outside_grid_folders_are_not_served(client, root):
    (root / "notes.txt").write_text("not a grid file")
    (root / "plain").mkdir()
    (root / "plain" / "x.png").write_bytes(b"png")
    assert client.get("/g/notes.txt").status_code == 404
    assert client.get("/g/plain/x.png").status_code == 404
    assert client.get(f"/g/{DB_NAME}").status_code == 404


# ---- security ------------------------------------------------------------------------------------


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text("TOPSECRET")
    return path


TRAVERSALS = [
    "/g/../secret.txt",
    "/g/tiny/../../secret.txt",
    "/g/%2e%2e/secret.txt",
    "/g/%2E%2E/secret.txt",
    "/g/tiny/%2e%2e/%2e%2e/secret.txt",
    "/g/tiny/.%2e/.%2e/secret.txt",
    "/g/tiny%2f..%2f..%2fsecret.txt",
    "/g/tiny/..%2F..%2Fsecret.txt",
    "/g/tiny/..%5c..%5csecret.txt",
    "/g/tiny/..\\..\\secret.txt",
    "/g/tiny/images%5c..%5c..%5cgrid.json",
    "/g//etc/passwd",
    "/g/%2fetc%2fpasswd",
    "/g/C:/Windows/win.ini",
    "/g/tiny/%00",
    "/live/../tiny",
    "/live/%2e%2e/secret.txt",
    "/_viewer/..%2fviewer.js",
]


@pytest.mark.parametrize("url", TRAVERSALS)
def test_path_traversal_is_rejected(client, secret, url):
    response = client.get(url)
    assert response.status_code in (400, 404), url
    assert b"TOPSECRET" not in response.data and b"root:" not in response.data


def test_absolute_path_and_symlinks_out_of_root_are_not_served(client, root, secret, rendered, tmp_path):
    assert client.get(f"/g/{secret}").status_code in (400, 404)  # /g//tmp/... after the prefix
    assert client.get(f"/g/tiny/{secret}").status_code in (400, 404)
    (root / "tiny" / "images" / "leak.png").symlink_to(secret)
    (root / "tiny" / "escape").symlink_to(secret.parent)
    outside = tmp_path / "outside-grid"
    shutil.copytree(rendered, outside)
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "tiny" / "images" / "inside.png").symlink_to(root / "tiny" / "images" / "1.png")
    for url in ("/g/tiny/images/leak.png", "/g/tiny/escape/secret.txt", "/g/linked/", "/g/linked/grid.json",
                "/g/linked/images/1.png", "/live/linked"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert b"TOPSECRET" not in response.data
    assert "linked" not in [g["id"] for g in client.get("/api/grids").get_json()["grids"]]
    assert client.get("/g/tiny/images/inside.png").status_code == 200  # a link that stays inside is fine


def test_token_is_checked_on_every_request(root):
    app = make_app(root, token=TOKEN)
    client = app.test_client()
    for url in ("/", "/api/grids", "/g/tiny/", "/g/tiny/images/1.png", "/live/tiny", "/api/favourites",
                "/favourites.zip", "/_viewer/viewer.js"):
        assert client.get(url).status_code == 401, url
        assert client.get(url, headers=auth("wrong")).status_code == 401, url
    assert client.get("/?token=wrong").status_code == 401
    assert client.post("/api/favourites", json={"grid": "tiny", "key": "1"}).status_code == 401
    assert client.get("/", headers=auth()).status_code == 200
    assert client.get("/g/tiny/images/1.png", headers=auth()).status_code == 200
    visit = client.get("/g/tiny/?token=" + TOKEN)
    assert visit.status_code == 303 and visit.headers["Location"] == "/g/tiny/"
    cookie = visit.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/g/tiny/").status_code == 200  # the cookie now carries it
    assert client.get("/g/tiny/images/1.png").status_code == 200
    client.delete_cookie("gridgen_token")
    assert client.get("/g/tiny/").status_code == 401
    get_state(app).shutdown()


def test_without_a_token_only_loopback_host_names_are_answered(client):
    for host in ("localhost", "127.0.0.1:7860", "[::1]:7860", "localhost:80"):
        assert client.get("/", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", "evil.example:7860", "192.168.1.5:7860", "127.0.0.1.evil.example"):
        assert client.get("/", headers={"Host": host}).status_code == 403, host


def test_cross_site_writes_are_refused(client):
    body = {"grid": "tiny", "key": "1"}
    assert client.post("/api/favourites", json=body, headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.post("/api/favourites", json=body, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert client.post("/api/favourites", json=body, headers={"Origin": "http://localhost"}).status_code == 201


def test_binding_rules(tmp_path, capsys):
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.com")
    check_bind(tmp_path, "127.0.0.1", None, False)
    check_bind(tmp_path, "0.0.0.0", TOKEN, True)
    with pytest.raises(GridError, match="--token"):
        check_bind(tmp_path, "0.0.0.0", None, False)
    with pytest.raises(GridError, match="--allow-runs"):
        check_bind(tmp_path, "127.0.0.1", None, True)
    with pytest.raises(GridError, match="not a folder"):
        check_bind(tmp_path / "missing", "127.0.0.1", None, False)
    with pytest.raises(GridError, match="token"):
        create_app(tmp_path, allow_runs=True, start_worker=False)
    # the CLI prints the reason and exits 2, without starting a server
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "missing is not a folder" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "pass --token" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--allow-runs", "--port", "0"]) == 2
    assert "--allow-runs" in capsys.readouterr().err


# ---- live progress -------------------------------------------------------------------------------


def _events(chunks, until, deadline_s: float = 30.0) -> list[tuple[str, dict, float]]:
    """Read SSE chunks until `until(events)` holds; returns (event, data, seconds since start)."""
    start = time.monotonic()
    events: list[tuple[str, dict, float]] = []
    buffer = ""
    for chunk in chunks:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":")
            if "event" in fields:
                events.append((fields["event"], json.loads(fields["data"]), time.monotonic() - start))
        if until(events) or time.monotonic() - start > deadline_s:
            break
    return events


def test_sse_streams_cells_while_a_tiny_grid_renders(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    text = spec_text(seeds=10)
    render(root / "live", text, first_batch_only=True, spec_dir=tmp_path)
    app = make_app(root)
    state = get_state(app)
    state.sse_poll_s, state.sse_heartbeat_s = 0.05, 0.5
    client = app.test_client()
    done = json.loads((root / "live" / "grid.json").read_text())["progress"]["done"]
    assert done == 1
    response = client.get(f"/live/live?from={done}", buffered=False)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    chunks = iter(response.response)
    hello = _events(chunks, lambda ev: any(e[0] == "hello" for e in ev))
    assert hello[0][0] == "hello" and hello[0][1]["line"] == 1 and hello[0][1]["progress"]["done"] == 1
    started = time.monotonic()
    thread = resume_in_thread(root / "live", text, spec_dir=tmp_path)
    journal = root / "live" / "journal.jsonl"
    lines_at_first_cell: list[int] = []

    def all_cells(ev) -> bool:
        cells = {e[1]["key"] for e in ev if e[0] == "cell"}
        if cells and not lines_at_first_cell:
            lines_at_first_cell.append(len(journal.read_text().splitlines()))
        return len(cells) >= 9

    events = _events(chunks, all_cells, 60)
    thread.join(60)
    finished = time.monotonic() - started
    response.close()
    seen = [e for e in events if e[0] == "cell"]
    assert sorted((e[1]["key"] for e in seen), key=int) == [str(i) for i in range(2, 11)]
    first = seen[0]
    assert first[1]["cell"]["image"] == f"images/{first[1]['key']}.png"
    assert first[1]["cell"]["thumb"] == f"thumbs/{first[1]['key']}.webp"
    assert "Seed: " in first[1]["cell"]["parameters"]
    assert lines_at_first_cell[0] < 10, "the first cell should arrive while the grid is still rendering"
    assert first[2] < finished
    assert any(e[0] == "progress" and e[1]["running"] for e in events)
    # a reconnect with Last-Event-ID goes on after the last line seen: nothing new, just hello
    again = client.get("/live/live", headers={"Last-Event-ID": "10"}, buffered=False)
    got = _events(iter(again.response), lambda ev: len(ev) >= 1)
    again.close()
    assert got[0][0] == "hello" and got[0][1]["line"] == 10
    state.shutdown()


def test_journal_tail_handles_torn_lines_and_a_replaced_journal(tmp_path):
    journal = tmp_path / "journal.jsonl"

    def line(key: str) -> str:
        return json.dumps({"key": key, "file": f"images/{key}.png", "thumb": f"thumbs/{key}.webp", "seed": 1}) + "\n"

    journal.write_text(line("a") + line("b"))
    closing = threading.Event()
    stream = journal_events(journal, lambda: {"done": 2}, 1, closing, poll_s=0.01, heartbeat_s=0.05)
    assert next(stream).startswith("retry:")
    assert "event: hello" in next(stream)
    first = next(stream)
    assert "id: 2\nevent: cell" in first and '"key":"b"' in first
    with open(journal, "a") as handle:
        handle.write(line("c")[:10])  # torn: not a cell yet
    assert next(stream) == ": keep-alive\n\n"
    with open(journal, "a") as handle:
        handle.write(line("c")[10:])
    assert '"key":"c"' in next(stream)
    journal.unlink()
    journal.write_text(line("z"))  # a run with --overwrite starts a new journal
    assert "event: reset" in next(stream)
    assert '"key":"z"' in next(stream)
    closing.set()
    assert list(stream) == []
    # a page that knows more cells than the journal has lines starts over
    stream = journal_events(journal, lambda: None, 5, closing)
    assert [chunk.split("\n")[0] for chunk in list(stream)[1:]] == ["event: hello", "id: 0"]


def test_live_stream_of_a_missing_grid_is_404(client):
    assert client.get("/live/nope").status_code == 404


# ---- favourites ----------------------------------------------------------------------------------


def test_favourites_add_list_remove_and_zip(client, root):
    assert client.get("/api/favourites").get_json() == {"favourites": []}
    assert client.post("/api/favourites", json={"grid": "tiny", "key": "2"}).status_code == 201
    again = client.post("/api/favourites", json={"grid": "tiny", "key": "2"})
    assert again.status_code == 200 and again.get_json()["added"] is False
    assert client.post("/api/favourites", json={"grid": "tiny", "key": "4"}).status_code == 201
    assert client.post("/api/favourites", json={"grid": "tiny", "key": "99"}).status_code == 404
    assert client.post("/api/favourites", json={"grid": "nope", "key": "1"}).status_code == 404
    assert client.post("/api/favourites", json={"grid": "../tiny", "key": "1"}).status_code == 404
    assert client.post("/api/favourites", json={"grid": "tiny"}).status_code == 400
    listed = client.get("/api/favourites?grid=tiny").get_json()["favourites"]
    assert [f["key"] for f in listed] == ["2", "4"]
    assert listed[0]["image"] == "/g/tiny/images/2.png" and listed[0]["thumb"] == "/g/tiny/thumbs/2.webp"
    assert client.get(listed[0]["image"]).status_code == 200
    page = client.get("/favourites").get_data(as_text=True)
    assert 'src="/g/tiny/thumbs/2.webp"' in page and 'data-key="4"' in page
    download = client.get("/favourites.zip?grid=tiny")
    assert download.status_code == 200 and download.mimetype == "application/zip"
    assert "attachment" in download.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(download.data)) as archive:
        assert sorted(archive.namelist()) == ["favourites.json", "tiny/images/2.png", "tiny/images/4.png"]
        assert archive.read("tiny/images/2.png") == (root / "tiny" / "images" / "2.png").read_bytes()
        manifest = json.loads(archive.read("favourites.json"))
        assert [m["key"] for m in manifest] == ["2", "4"] and manifest[0]["params"]["seed"] == 2
    removed = client.delete("/api/favourites", json={"grid": "tiny", "key": "2"})
    assert removed.status_code == 200 and removed.get_json()["removed"] is True
    assert [f["key"] for f in client.get("/api/favourites").get_json()["favourites"]] == ["4"]
    with zipfile.ZipFile(io.BytesIO(client.get("/favourites.zip").data)) as archive:
        assert sorted(archive.namelist()) == ["favourites.json", "tiny/images/4.png"]
    assert (root / DB_NAME).is_file()  # kept under the root


def test_favourites_survive_a_restart(root):
    app = make_app(root)
    app.test_client().post("/api/favourites", json={"grid": "tiny", "key": "3"})
    get_state(app).shutdown()
    app = make_app(root)
    assert [f["key"] for f in app.test_client().get("/api/favourites").get_json()["favourites"]] == ["3"]
    get_state(app).shutdown()


# ---- runs from the browser -----------------------------------------------------------------------


def test_runs_are_off_unless_allowed(client):
    for method, url in (("get", "/runs"), ("get", "/api/runs"), ("post", "/api/runs"), ("get", "/api/runs/1"),
                        ("post", "/api/runs/1/cancel")):
        assert getattr(client, method)(url).status_code == 403, url


@pytest.fixture
def runs_app(root):
    app = make_app(root, token=TOKEN, allow_runs=True, max_upload_bytes=4096)
    yield app
    get_state(app).shutdown()


def test_runs_page_and_submission(runs_app, root):
    client = runs_app.test_client()
    page = client.get("/runs", headers=auth())
    assert page.status_code == 200 and 'id="gv-submit"' in page.get_data(as_text=True)
    ok = client.post("/api/runs", json={"spec": spec_text(title="queued"), "name": "first"}, headers=auth())
    assert ok.status_code == 201, ok.get_json()
    body = ok.get_json()
    assert body["run"]["status"] == "queued" and body["run"]["name"] == "first" and body["cells"] == 4
    upload = client.post("/api/runs", headers=auth(), content_type="multipart/form-data",
                         data={"file": (io.BytesIO(spec_text(title="upload").encode()), "my grid.yaml")})
    assert upload.status_code == 201, upload.get_json()
    assert upload.get_json()["run"]["name"] == "my-grid"  # named after the file
    pasted = client.post("/api/runs", headers=auth(), data={"spec": spec_text(), "name": "pasted"})
    assert pasted.status_code == 201
    runs = client.get("/api/runs", headers=auth()).get_json()["runs"]
    assert [(r["id"], r["name"], r["status"]) for r in runs] == [(1, "first", "queued"), (2, "my-grid", "queued"),
                                                                  (3, "pasted", "queued")]
    shown = client.get("/api/runs/1", headers=auth()).get_json()["run"]
    assert shown["spec"] == spec_text(title="queued")
    assert client.get("/api/runs/99", headers=auth()).status_code == 404
    # names: busy, already a folder under the root, unsafe
    assert client.post("/api/runs", json={"spec": spec_text(), "name": "first"}, headers=auth()).status_code == 409
    assert client.post("/api/runs", json={"spec": spec_text(), "name": "tiny"}, headers=auth()).status_code == 409
    bad = client.post("/api/runs", json={"spec": spec_text(), "name": "../up"}, headers=auth())
    assert bad.status_code == 422 and "run name" in bad.get_json()["problems"][0]
    assert client.post("/api/runs", json={"spec": "  "}, headers=auth()).status_code == 400
    assert not list(root.glob(".gridgen-spec-*"))  # the temporary spec files are gone


def test_invalid_specs_report_every_problem_with_line_numbers(runs_app):
    client = runs_app.test_client()
    text = "axes:\n  steps: 0, 5\n  cfg_scale: x\n"
    bad = client.post("/api/runs", json={"spec": text, "filename": "bad.yaml", "name": "bad"}, headers=auth())
    assert bad.status_code == 422
    problems = bad.get_json()["problems"]
    assert any(p.startswith("bad.yaml:2:10: steps must be") for p in problems), problems
    assert any(p.startswith("bad.yaml:3:14: axis 'cfg_scale'") for p in problems), problems
    syntax = client.post("/api/runs", json={"spec": "axes: [\n", "filename": "s.yaml", "name": "s"}, headers=auth())
    assert syntax.status_code == 422 and syntax.get_json()["problems"][0].startswith("s.yaml:")


def test_browser_specs_may_only_use_paths_under_root_or_models_dir(root, tmp_path):
    outside = tmp_path / "outside-models" / "sd"
    outside.mkdir(parents=True)
    (outside / "model_index.json").write_text("{}")
    models = tmp_path / "models"
    (models / "Stable-diffusion").mkdir(parents=True)
    shutil.copytree(Path(__file__).resolve().parents[1] / "gridgen" / "tiny" / "gridgen-tiny",
                    models / "Stable-diffusion" / "copy")
    (tmp_path / "evil.yaml").write_text("axes:\n  seed: 1, 2\n")
    app = make_app(root, token=TOKEN, allow_runs=True, models_dir=models)
    client = app.test_client()

    def submit(text: str, name: str):
        return client.post("/api/runs", json={"spec": text, "filename": "p.yaml", "name": name}, headers=auth())

    base = spec_text()
    cases = {
        "abs": base.replace("model: gridgen-tiny", f"model: {outside}"),
        "dotdot": base.replace("model: gridgen-tiny", "model: ../outside-models/sd"),
        "hub": base.replace("model: gridgen-tiny", "model: runwayml/stable-diffusion-v1-5"),
        "vae": base.replace("model: gridgen-tiny", f"model: gridgen-tiny, vae: {outside}"),
        "axis": base + f"  model: gridgen-tiny || {outside}\n",
        "include": f"include: {tmp_path / 'evil.yaml'}\n" + base,
        "include-up": "include: ../evil.yaml\n" + base,
        "lora": base.replace("model: gridgen-tiny", f"model: gridgen-tiny, lora: {outside / 'x.safetensors'}:0.5"),
        "embedding-axis": base + f"  embedding: {outside / 'e.pt'}\n",
    }
    (outside / "x.safetensors").write_bytes(b"")
    (outside / "e.pt").write_bytes(b"")
    for name, text in cases.items():
        response = submit(text, name)
        assert response.status_code == 422, (name, response.get_json())
        problems = response.get_json()["problems"]
        assert any("outside the root" in p or "not found under the root" in p for p in problems), (name, problems)
        assert all(p.startswith("p.yaml:") for p in problems), (name, problems)
    assert submit(base.replace("model: gridgen-tiny", "model: copy"), "from-models").status_code == 201
    assert submit(base.replace("model: gridgen-tiny", f"model: {models / 'Stable-diffusion' / 'copy'}"),
                  "abs-models").status_code == 201
    shutil.copytree(models / "Stable-diffusion" / "copy", root / "mine")
    assert submit(base.replace("model: gridgen-tiny", "model: mine"), "from-root").status_code == 201
    assert submit("include: axes/cfg.yaml\n" + base, "bundled").status_code == 201  # gridgen's own axes/
    write_kohya_lora(models / "Lora" / "style.safetensors", unet_lora_weights())
    assert submit(base.replace("model: gridgen-tiny", "model: gridgen-tiny, lora: style:0.5"),
                  "lora-from-models").status_code == 201
    get_state(app).shutdown()


def test_uploads_are_size_limited(runs_app):
    client = runs_app.test_client()
    big = spec_text() + "# " + "x" * 5000 + "\n"
    assert client.post("/api/runs", json={"spec": big}, headers=auth()).status_code == 413
    upload = client.post("/api/runs", headers=auth(), content_type="multipart/form-data",
                         data={"file": (io.BytesIO(big.encode()), "big.yaml")})
    assert upload.status_code == 413
    huge = client.post("/api/runs", headers=auth(), data={"spec": "x" * 20000})  # over the request limit
    assert huge.status_code == 413
    assert client.get("/api/runs", headers=auth()).get_json()["runs"] == []


def test_queue_survives_a_restart_and_the_worker_renders_it(root):
    app = make_app(root, token=TOKEN, allow_runs=True)
    client = app.test_client()
    for name in ("one", "two", "three"):
        response = client.post("/api/runs", json={"spec": spec_text(title=name, seeds=2), "name": name},
                               headers=auth())
        assert response.status_code == 201
    assert client.post("/api/runs/2/cancel", headers=auth()).get_json()["run"]["status"] == "cancelled"
    assert client.post("/api/runs/2/cancel", headers=auth()).status_code == 409
    get_state(app).shutdown()
    # a run that was rendering when the server died goes back to the queue
    with sqlite3.connect(root / DB_NAME) as conn:
        conn.execute("UPDATE runs SET status = 'running' WHERE id = 1")
    app = make_app(root, token=TOKEN, allow_runs=True)
    client = app.test_client()
    runs = client.get("/api/runs", headers=auth()).get_json()["runs"]
    assert [(r["name"], r["status"]) for r in runs] == [("one", "queued"), ("two", "cancelled"), ("three", "queued")]
    get_state(app).shutdown()
    app = make_app(root, token=TOKEN, allow_runs=True, start_worker=True)
    client = app.test_client()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = client.get("/api/runs", headers=auth()).get_json()["runs"]
        if all(r["status"] in ("done", "cancelled", "failed") for r in runs):
            break
        time.sleep(0.2)
    assert [(r["name"], r["status"]) for r in runs] == [("one", "done"), ("two", "cancelled"), ("three", "done")], runs
    assert runs[0]["finished"] <= runs[2]["started"]  # in order, one at a time
    assert runs[0]["href"] == "/g/one/"
    grids = {g["id"]: g for g in client.get("/api/grids", headers=auth()).get_json()["grids"]}
    assert grids["one"]["done"] == 2 and grids["three"]["title"] == "three" and "two" not in grids
    assert (root / "one" / "images" / "1.png").is_file()
    get_state(app).shutdown()


def test_cancel_stops_a_running_grid_after_the_batch_in_flight(root):
    app = make_app(root, token=TOKEN, allow_runs=True, start_worker=True)
    client = app.test_client()
    many = spec_text(title="long", seeds=1, extra_axes="  steps: 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16\n")
    assert client.post("/api/runs", json={"spec": many, "name": "long"}, headers=auth()).status_code == 201
    journal = root / "long" / "journal.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (journal.exists() and journal.read_text().strip()):
        time.sleep(0.02)
    assert client.post("/api/runs/1/cancel", headers=auth()).get_json()["run"]["status"] in ("cancelling",
                                                                                           "cancelled")
    while time.monotonic() < deadline:
        run = client.get("/api/runs/1", headers=auth()).get_json()["run"]
        if run["status"] == "cancelled":
            break
        time.sleep(0.1)
    assert run["status"] == "cancelled", run
    rendered = len(journal.read_text().splitlines())
    assert 1 <= rendered < 14
    get_state(app).shutdown()
