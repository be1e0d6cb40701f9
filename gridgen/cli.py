"""The `gridgen` command line: run, validate, params, html.

Errors a user can cause are printed as `FILE:LINE:COL: message` lines, all of them, and the
command exits 2; an interrupted run exits 130; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gridgen import params as P
from gridgen.errors import GridError, Location, Problem, SpecError
from gridgen.plan import Plan
from gridgen.runner import RunOptions, execute, prepare
from gridgen.spec.limits import DEFAULT_LIMITS, Limits

EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_PIPE_CLOSED = 0, 2, 130, 141


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    overrides, problems = {}, []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            problems.append(Problem(f"--set expects key=value, got {pair!r}", Location(None)))
            continue
        if not pair.isprintable() or any("\ud800" <= char <= "\udfff" for char in pair):
            problems.append(Problem(f"--set {name.strip()!r}: the value holds control characters or bytes that are "
                                    "not UTF-8 text", Location(None)))
            continue
        overrides[name.strip()] = value.strip()
    if problems:
        raise SpecError(problems)
    return overrides


def _options(args) -> RunOptions:
    return RunOptions(out=Path(args.out) if getattr(args, "out", None) else None,
                      overrides=_parse_sets(args.set or []), backend=args.backend, models_dir=args.models_dir,
                      device=args.device, dtype=args.dtype, batch_size=args.batch_size, strict=args.strict,
                      overwrite=getattr(args, "overwrite", False), compile=getattr(args, "compile", False),
                      channels_last=getattr(args, "channels_last", False),
                      cpu_shards=getattr(args, "cpu_shards", 0),
                      cache_bytes=int(getattr(args, "cache_mb", 1024) * 2**20),
                      executor=getattr(args, "executor", "local"), ray_address=getattr(args, "ray_address", None),
                      gpus_per_worker=getattr(args, "gpus_per_worker", 1.0), workers=getattr(args, "workers", None),
                      limits=Limits(max_axis_values=args.max_axis_values, max_cells=args.max_cells))


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {number}")
    return number


def _print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)


def cmd_validate(args) -> int:
    if args.json:
        return _validate_json(args)
    prepared = prepare(Path(args.spec), _options(args))
    plan = prepared.plan
    _print_problems(prepared.warnings)
    skipped = sum(1 for cell in plan.cells() if cell.skip)
    print(f"{args.spec}: ok, {plan.total} cells ({plan.total - skipped} to render, {skipped} skipped), "
          f"{len(plan.spec.axes)} axes")
    return EXIT_OK


def _validate_json(args) -> int:
    """Print the expanded grid and every problem as JSON (see gridgen/spec/report.py); exit 2 on errors."""
    import json

    from gridgen.spec.report import grid_report

    try:
        prepared = prepare(Path(args.spec), _options(args))
        spec, problems = prepared.plan.spec, prepared.warnings
    except SpecError as err:
        problems, spec = err.problems, getattr(err, "spec", None)
        if spec is not None and spec.problems:
            spec = None  # the grid is shown only where the spec itself is sound (the backend refused a cell)
    except GridError as err:  # an unknown backend, say: still one JSON document
        problems, spec = [Problem(str(err), None)], None
    report = grid_report(str(args.spec), spec, problems)
    print(json.dumps(report, ensure_ascii=False, indent=1))
    return EXIT_OK if report["ok"] else EXIT_BAD_INPUT


def cmd_run(args) -> int:
    options = _options(args)
    prepared = prepare(Path(args.spec), options)
    _print_problems(prepared.warnings)
    out_dir = prepared.out_dir
    if args.dry_run:
        return _dry_run(prepared.plan, out_dir)
    summary = execute(prepared, options, show_progress=not args.quiet)
    for line in summary.lines():
        print(line)
    print(f"open {(out_dir / 'index.html').resolve()}")
    if summary.interrupted:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_BAD_INPUT if summary.failed else EXIT_OK


def _dry_run(plan: Plan, out_dir: Path) -> int:
    from gridgen.store import read_journal

    done = read_journal(out_dir / "journal.jsonl")
    cells = list(plan.cells()) if plan.total <= 100_000 else None
    if cells is not None:
        skipped = sum(1 for c in cells if c.skip)
        already = sum(1 for c in cells if not c.skip and c.key in done)
        print(f"{plan.total} cells: {plan.total - skipped - already} to render, {skipped} skipped, "
              f"{already} already done")
    else:
        print(f"{plan.total} cells")
    loads = plan.loads()
    print(f"{len(loads)} model load(s):")
    for line in loads:
        print(f"  {line}")
    print(f"output: {out_dir}")
    return EXIT_OK


def cmd_params(args) -> int:
    registry = P.Registry()
    for param in registry:
        aliases = ", ".join(param.aliases)
        detail = P.describe_range(param) or param.choices_help
        default = "" if param.default is None else f" (default {param.default!r})"
        print(f"{param.name}: {param.kind}{default}")
        if aliases:
            print(f"    aliases: {aliases}")
        if detail:
            print(f"    values: {detail}")
        print(f"    {param.help}")
    return EXIT_OK


def cmd_html(args) -> int:
    from gridgen import explorer

    explorer.rebuild(Path(args.outdir))
    print(f"wrote {(Path(args.outdir) / 'index.html').resolve()}")
    return EXIT_OK


def cmd_serve(args) -> int:
    from gridgen.viewer.server import serve

    return serve(Path(args.root), host=args.host, port=args.port, token=args.token, allow_runs=args.allow_runs,
                 models_dir=Path(args.models_dir) if args.models_dir else None)


def cmd_export(args) -> int:
    from gridgen.export import export_grid

    if args.metrics:
        from gridgen.metrics_table import write_metrics_csv

        write_metrics_csv(Path(args.outdir), args.metrics, sys.stdout)
        return EXIT_OK
    if not args.x:
        raise GridError("gridgen export needs --x AXIS (the axis laid out as columns), or --metrics")
    paths = export_grid(Path(args.outdir), x=args.x, y=args.y, output=Path(args.output), fixes=args.fix or [],
                        thumbs=args.thumbs, max_pixels=args.max_pixels)
    for path in paths:
        print(f"wrote {path}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The `gridgen` parser with every subcommand; `subcommands` lists them (the CLI reference is made from both)."""
    parser = argparse.ArgumentParser(prog="gridgen", description="Render Stable Diffusion settings as a grid.")
    sub = parser.add_subparsers(dest="command", required=True)

    def spec_command(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("spec", help="the grid spec (YAML)")
        cmd.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a base param (repeatable)")
        cmd.add_argument("--strict", action="store_true", help="treat warnings (unsupported params) as errors")
        cmd.add_argument("--backend", help="backend name (default: the spec's `backend:` or diffusers)")
        cmd.add_argument("--models-dir", help="folder where bare model names are looked up (env GRIDGEN_MODELS_DIR)")
        cmd.add_argument("--device", default="auto",
                         help="where models run: auto (CUDA when present, else the CPU), cpu, cuda or cuda:N "
                              "(default: auto)")
        cmd.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                         help="precision models run in: auto is fp16 on CUDA and fp32 on the CPU (default: auto)")
        cmd.add_argument("--batch-size", type=_positive, default=8,
                         help="most cells denoised together; on CUDA fewer when free memory is short (default: 8)")
        cmd.add_argument("--max-axis-values", type=_positive, default=DEFAULT_LIMITS.max_axis_values, metavar="N",
                         help=f"most values one axis may have (default {DEFAULT_LIMITS.max_axis_values:,})")
        cmd.add_argument("--max-cells", type=_positive, default=DEFAULT_LIMITS.max_cells, metavar="N",
                         help=f"most cells a grid may have (default {DEFAULT_LIMITS.max_cells:,})")
        return cmd

    run = spec_command("run", "render a grid")
    run.add_argument("--out", metavar="DIR", help="output folder (default: the spec's `outpath:` relative to the spec, "
                     "else out/<spec name> in the current folder)")
    run.add_argument("--dry-run", action="store_true", help="validate and plan without loading any model")
    run.add_argument("--overwrite", action="store_true", help="render every cell again")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--compile", action="store_true", help="torch.compile the UNet and VAE (worth it on CUDA)")
    run.add_argument("--channels-last", action="store_true", help="NHWC memory format (faster on recent GPUs)")
    run.add_argument("--cache-mb", type=float, default=1024, metavar="MB",
                     help="memory for stage outputs kept across cells (base images, depth maps, masks); past it, "
                          "they spill to the output folder's .cache/ (default: 1024)")
    run.add_argument("--cpu-shards", type=int, default=0, metavar="N",
                     help="on the CPU, run each UNet batch as N slices on single-threaded workers "
                          "(default: one per core torch uses; 1: off)")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="local: this process; ray: one worker per GPU of a Ray cluster (pip install gridgen[ray]) "
                          "(default: local)")
    run.add_argument("--ray-address", metavar="auto|HOST:PORT",
                     help="the Ray cluster to use (default: start a local one sized to this machine)")
    run.add_argument("--gpus-per-worker", type=float, default=1.0,
                     help="with --executor ray: GPUs each worker holds; 0 makes CPU workers (default: 1)")
    run.add_argument("--workers", type=_positive,
                     help="with --executor ray: workers to start (default: one per GPU, or one per 2 CPUs)")
    run.set_defaults(func=cmd_run)
    validate = spec_command("validate", "check a grid spec without rendering")
    validate.add_argument("--json", action="store_true",
                          help="print the expanded grid (axes, values, cell counts, problems) as JSON")
    validate.set_defaults(func=cmd_validate)
    sub.add_parser("params", help="list every parameter").set_defaults(func=cmd_params)
    html = sub.add_parser("html", help="rebuild index.html and data.js of an output folder")
    html.add_argument("outdir", help="the grid's output folder (holds journal.jsonl and grid.json)")
    html.set_defaults(func=cmd_html)
    serve = sub.add_parser("serve", help="serve every grid under a folder in the browser, with live progress")
    serve.add_argument("root", help="the folder holding grid output folders (searched a few levels deep)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind; any but loopback needs --token (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=7860, help="port to listen on (default: 7860)")
    serve.add_argument("--token", help="secret every request must carry (default: env GRIDGEN_TOKEN)")
    serve.add_argument("--allow-runs", action="store_true", help="let the browser queue grid runs (needs --token)")
    serve.add_argument("--models-dir", help="folder whose models browser-submitted specs may use, besides ROOT")
    serve.set_defaults(func=cmd_serve)
    export = sub.add_parser("export", help="draw one labelled grid image (A1111-style) of an output folder")
    export.add_argument("outdir", help="the grid's output folder (holds grid.json)")
    export.add_argument("--x", metavar="AXIS", help="axis (id or title) laid out as columns")
    export.add_argument("--y", metavar="AXIS", help="axis laid out as rows (default: one row)")
    export.add_argument("--fix", action="append", metavar="AXIS=VALUE", help="value of another axis (repeatable)")
    export.add_argument("--thumbs", action="store_true", help="draw the thumbnails instead of the full images")
    export.add_argument("--max-pixels", type=int, default=60_000_000, help="pixel limit per file; larger grids "
                        "are split into NAME-1.png, NAME-2.png, ... (default: 60,000,000)")
    export.add_argument("-o", "--output", default="grid.png",
                        help="image file to write (.png, .jpg or .webp) (default: ./grid.png, in the current folder)")
    export.add_argument("--metrics", nargs="?", const="influence", choices=["influence", "cells"],
                        help="print CSV instead of drawing: each axis's influence and its values' distances "
                        "(default), or each cell's image metrics")
    export.set_defaults(func=cmd_export)
    return parser


def subcommands(parser: argparse.ArgumentParser | None = None) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """Each subcommand of `parser` (default: `build_parser()`) as (name, its one-line help, its parser), in the
    order `gridgen --help` lists them."""
    parser = parser or build_parser()
    found = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in found._choices_actions}
    return [(name, helps.get(name) or "", sub) for name, sub in found.choices.items()]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
        sys.stdout.flush()  # so that a reader gone early shows here, not at the interpreter's exit
        return status
    except SpecError as err:
        _print_problems(err.problems)
        errors = sum(1 for p in err.problems if p.severity == "error")
        print(f"{errors} problem(s) found", file=sys.stderr)
        return EXIT_BAD_INPUT
    except GridError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("\naborted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader stopped early (`gridgen validate --json ... | head`): not an error of ours
        # Python flushes stdout again at exit, which would fail on the closed pipe; point it at nothing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE_CLOSED


if __name__ == "__main__":
    sys.exit(main())
