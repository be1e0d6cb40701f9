"""MkDocs hook that writes the reference pages from the code at build time, so they cannot drift from it.

A page that holds the marker `<!-- gridgen:cli -->` gets every `gridgen` subcommand with its usage and each
argument (flags, default, choices, help) read from `gridgen.cli.build_parser()` through `gridgen.cli.subcommands`;
`<!-- gridgen:params -->` gets every param of the registry `gridgen params` prints (name, aliases, type,
values, default, who reads it, help), grouped as the code declares them. A flag or a param without help text
is logged as a warning, which `mkdocs build --strict` turns into a failed build.
"""

from __future__ import annotations

import argparse
import logging
import re

log = logging.getLogger("mkdocs.plugins.gridgen_reference")

CLI_MARKER = "<!-- gridgen:cli -->"
PARAMS_MARKER = "<!-- gridgen:params -->"
_CODE_SPAN = re.compile(r"(`[^`]*`)")
_STAGE_READERS = {"plan": "planning", "text": "the text encoder", "base": "the base image",
                  "post": "a stage after the base image", "output": "the saved file"}


def on_page_markdown(markdown: str, page, config, files) -> str:
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_markdown())
    if PARAMS_MARKER in markdown:
        markdown = markdown.replace(PARAMS_MARKER, params_markdown())
    return markdown


def _text(text: str) -> str:
    """Help text as Markdown: angle brackets outside code spans escaped (`out/<spec name>` is no HTML tag)."""
    parts = _CODE_SPAN.split(" ".join(str(text).split()))
    return "".join(part if part.startswith("`") else part.replace("<", "&lt;").replace(">", "&gt;")
                   for part in parts)


def _cell(text: str) -> str:
    return _text(text).replace("|", "\\|")


def _help(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%(" in text:
        text = text % dict(vars(action), prog=prog)
    return text


def _argument_name(action: argparse.Action) -> str:
    if action.option_strings:
        takes_value = action.nargs != 0
        metavar = action.metavar or action.dest.upper()
        names = ", ".join(f"`{option}`" for option in action.option_strings)
        return f"{names} `{metavar}`" if takes_value and action.nargs != "?" else (
            f"{names} `[{metavar}]`" if action.nargs == "?" else names)
    return f"`{action.metavar or action.dest.upper()}`"


def _default(action: argparse.Action) -> str:
    if action.option_strings and action.nargs == 0:
        return ""
    if action.default in (None, argparse.SUPPRESS) or action.default == []:
        return ""
    return f"`{action.default}`"


def cli_markdown() -> str:
    from gridgen.cli import build_parser, subcommands

    lines = []
    for name, summary, sub in subcommands(build_parser()):
        if not summary:
            log.warning("gridgen %s has no help text: give its add_parser a help=", name)
        lines += [f"## gridgen {name}", "", _text(summary[:1].upper() + summary[1:]) + ".", "", "```text",
                  sub.format_usage().strip().removeprefix("usage: "), "```", "",
                  "| argument | default | choices | what it does |", "|---|---|---|---|"]
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            help_text = _help(action, sub.prog)
            if not help_text:
                log.warning("%s of gridgen %s has no help text", "/".join(action.option_strings) or action.dest,
                            name)
            choices = ", ".join(f"`{choice}`" for choice in action.choices) if action.choices else ""
            lines.append(f"| {_argument_name(action)} | {_default(action)} | {choices} | {_cell(help_text)} |")
        lines.append("")
    return "\n".join(lines)


def _groups():
    """(title, params) in declaration order: each `*_PARAMS` tuple of the technique module is a group of its own."""
    from gridgen import params as registry_module
    from gridgen import technique_params

    groups = []
    for module in (registry_module, technique_params):
        for attribute, value in vars(module).items():
            if attribute.endswith("_PARAMS") and attribute not in ("CORE_PARAMS", "TECHNIQUE_PARAMS") \
                    and isinstance(value, tuple):
                title = attribute.removesuffix("_PARAMS").replace("_", " ").capitalize()
                groups.append((title, {param.name for param in value}))
    return groups


def _value_text(param) -> str:
    from gridgen import params as P

    parts = [text for text in (P.describe_range(param), param.choices_help) if text]
    return "; ".join(parts)


def params_markdown() -> str:
    from gridgen import params as P

    registry = list(P.Registry())
    grouped = _groups()
    sections: dict[str, list] = {"Core": []}
    sections.update({title: [] for title, _ in grouped})
    for param in registry:
        title = next((title for title, names in grouped if param.name in names), "Core")
        sections[title].append(param)
    lines = [f"{len(registry)} params in {sum(1 for v in sections.values() if v)} groups.", ""]
    for title, members in sections.items():
        if not members:
            continue
        lines += [f"## {title}", ""]
        for param in members:
            if not param.help:
                log.warning("param %s has no help text: give its Param(...) a help string", param.name)
            lines += [f"### `{param.name}`", "", _text(param.help), ""]
            facts = [("type", f"`{param.kind}`")]
            if param.aliases:
                facts.append(("aliases", ", ".join(f"`{alias}`" for alias in param.aliases)))
            values = _value_text(param)
            if values:
                facts.append(("values", _text(values)))
            if param.default is not None:
                facts.append(("default", f"`{param.default!r}`"))
            facts.append(("read by", _STAGE_READERS.get(param.stage, param.stage)))
            if param.accumulate:
                facts.append(("adds up", "values from the grid's params and every axis add up"))
            lines += [" · ".join(f"**{key}**: {value}" for key, value in facts), ""]
    return "\n".join(lines)
