"""Every example in README.md and docs/ runs, on the embedded model with tiny settings.

Sybil lexes the fenced blocks of each page; this module runs them:

- ```yaml: a grid spec. It must pass `gridgen validate --strict` as written, then it is rendered with
  `--set steps=2` (axes still set their own). A `title="NAME"` saves it as NAME in the page's work folder
  instead, where the page's shell blocks find it and render it. `--8<-- "grids/x.yaml"` (a file the site
  includes) runs that file.
- ```sh: run by bash (`set -euo pipefail`) in the page's work folder, with `gridgen` on PATH.
- ```console: `$ ` lines are run one by one as typed at a prompt (a failing one is part of the example), and
  what follows each, up to the next `$ `, is its expected output (stdout and stderr), where a line `...`
  stands for any lines and `...` inside a line for any text.
- any block with `title="NAME"` that is not yaml (a wildcard file, say) is only saved as NAME.

A comment on the line before a block changes that: `<!-- example: validate -->` (validate only, for a grid
too slow for the suite), `<!-- example: load, REASON -->` (only the spec's own checks, no model or file
lookups: for a hub model, a GPU, a Ray cluster, files of your own), `<!-- example: skip, REASON -->`.
A page's work folder holds `grids/` and `inputs/` (links to the repository's) and every titled block of it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sybil import Document, Region
from sybil.parsers.markdown.lexers import RawFencedCodeBlockLexer

from gridgen.cli import main
from gridgen.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md")
                                     if not p.relative_to(ROOT / "docs").parts[0].startswith("_"))]
INFO = re.compile(r'(?P<language>[\w-]*)(?:[ \t]+title="(?P<title>[^"]*)")?[^\n]*$\n', re.MULTILINE)
DIRECTIVE = re.compile(r"<!--\s*example:\s*(?P<mode>\w+)\s*(?:,\s*(?P<reason>.*?))?\s*-->\s*$")
INCLUDE = re.compile(r'^--8<--\s+"(?P<path>[^"]+)"\s*$')
MODES = {"run", "validate", "load", "skip"}
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str
    title: str | None
    source: str
    mode: str
    reason: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _blocks_of(page: Path) -> list[Block]:
    def parse(document: Document):
        for region in RawFencedCodeBlockLexer(info_pattern=INFO)(document):
            before = document.text[:region.start].rstrip("\n").rsplit("\n", 1)[-1]
            found = DIRECTIVE.search(before)
            region.parsed = (region.lexemes, found.group("mode") if found else "run",
                             (found.group("reason") or "") if found else "")
            yield Region(region.start, region.end, parsed=region.parsed)

    blocks = []
    for example in Document.parse(str(page), parse):
        lexemes, mode, reason = example.parsed
        blocks.append(Block(page, example.line, lexemes["language"], lexemes["title"], str(lexemes["source"]),
                            mode, reason))
    return blocks


BLOCKS = [block for page in PAGES for block in _blocks_of(page)]
TESTED = [b for b in BLOCKS if b.language in ("yaml", "sh", "console")]


@pytest.fixture(scope="session")
def work_folders(tmp_path_factory):
    made: dict[Path, Path] = {}

    def folder(page: Path) -> Path:
        if page not in made:
            work = tmp_path_factory.mktemp(page.stem)
            (work / "grids").symlink_to(ROOT / "grids")
            (work / "inputs").symlink_to(ROOT / "grids" / "inputs")
            for block in BLOCKS:
                if block.page == page and block.title and not INCLUDE.match(block.source.strip()):
                    target = work / block.title
                    assert target.resolve().is_relative_to(work.resolve()), f"{block.name}: {block.title} is outside"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(block.source, encoding="utf-8")
            made[page] = work
        return made[page]

    return folder


def _cli(args: list[str], capsys) -> str:
    code = main(args)
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert code == 0, f"gridgen {' '.join(args)} exited {code}:\n{output}"
    return output


def _spec_path(block: Block, work: Path) -> Path:
    included = INCLUDE.match(block.source.strip())
    if included:
        return ROOT / included.group("path")
    if block.title:
        return work / block.title
    path = work / f"example-{block.line}.yaml"
    path.write_text(block.source, encoding="utf-8")
    return path


def _run_yaml(block: Block, work: Path, capsys) -> None:
    spec = _spec_path(block, work)
    if block.mode == "load":
        load_spec(spec)
        return
    _cli(["validate", "--strict", str(spec)], capsys)
    if block.mode == "run" and not block.title:  # a titled spec is the page's shell blocks' to render
        _cli(["run", str(spec), "--out", str(work / "out" / f"example-{block.line}"), "--quiet",
              "--set", "steps=2"], capsys)


def _shell(script: str, work: Path, strict: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", COLUMNS="200")
    script = ("set -euo pipefail\n" if strict else "") + script
    return subprocess.run(["bash", "-c", script], cwd=work, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)


def _matches(expected: list[str], actual: list[str]) -> bool:
    pattern = "\n".join(".*?" if line.strip() == "..." else
                        ".*?".join(re.escape(part) for part in line.rstrip().split("...")) for line in expected)
    return re.fullmatch(pattern, "\n".join(line.rstrip() for line in actual), re.DOTALL) is not None


def _run_console(block: Block, work: Path) -> None:
    session: list[tuple[str, list[str]]] = []
    for line in block.source.splitlines():
        if line.startswith("$ "):
            session.append((line[2:], []))
        elif session:
            session[-1][1].append(line)
    assert session, f"{block.name}: a console block needs `$ ` command lines"
    for command, expected in session:
        done = _shell(command, work, strict=False)  # typed at a prompt: a failing command is part of the example
        actual = done.stdout.rstrip("\n").splitlines()
        assert _matches([line for line in expected], actual), (
            f"{block.name}: `{command}` printed\n{done.stdout}\nexpected\n" + "\n".join(expected))


@pytest.mark.parametrize("block", TESTED, ids=[b.name for b in TESTED])
def test_example(block: Block, work_folders, capsys):
    assert block.mode in MODES, f"{block.name}: unknown example mode {block.mode!r}; use one of {sorted(MODES)}"
    if block.mode == "skip":
        assert block.reason, f"{block.name}: say why the example is skipped"
        pytest.skip(block.reason)
    if block.mode == "load":
        assert block.reason, f"{block.name}: say why the example only loads"
    work = work_folders(block.page)
    if block.language == "yaml":
        _run_yaml(block, work, capsys)
    elif block.language == "sh":
        done = _shell(block.source, work)
        assert done.returncode == 0, f"{block.name} exited {done.returncode}:\n{done.stdout}"
    else:
        _run_console(block, work)


def test_the_collector_finds_the_examples():
    assert len([b for b in TESTED if b.mode == "run" and b.language == "yaml"]) >= 20, "check INFO and the pages"
    assert any(b.language == "console" for b in TESTED) and any(b.language == "sh" for b in TESTED)
