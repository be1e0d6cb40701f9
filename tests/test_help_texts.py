"""Every flag and argument of every `gridgen` subcommand, and every param `gridgen params` prints, explains itself:
the CLI and params reference is generated from these texts, so a missing one is a hole in the docs."""

from __future__ import annotations

import argparse

import pytest

from gridgen import params as P
from gridgen.cli import build_parser, subcommands

SUBCOMMANDS = subcommands()


def explained(action: argparse.Action) -> bool:
    return bool(action.help and action.help.strip() and action.help != argparse.SUPPRESS)


def arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [action for action in parser._actions if not isinstance(action, argparse._HelpAction)]


def test_every_subcommand_is_found_and_has_a_help_line():
    names = [name for name, _, _ in SUBCOMMANDS]
    assert {"run", "validate", "params", "html", "serve", "export"} <= set(names)
    assert all(help_line.strip() for _, help_line, _ in SUBCOMMANDS), SUBCOMMANDS
    assert [name for name, _, _ in subcommands(build_parser())] == names


@pytest.mark.parametrize("name, parser", [(name, parser) for name, _, parser in SUBCOMMANDS],
                         ids=[name for name, _, _ in SUBCOMMANDS])
def test_every_argument_has_help(name, parser):
    missing = [action.option_strings or [action.dest] for action in arguments(parser) if not explained(action)]
    assert not missing, f"gridgen {name}: no help text for {missing}"


@pytest.mark.parametrize("name, parser", [(name, parser) for name, _, parser in SUBCOMMANDS],
                         ids=[name for name, _, _ in SUBCOMMANDS])
def test_every_option_with_a_default_states_it(name, parser):
    silent = [action.option_strings for action in arguments(parser)
              if action.option_strings and action.default not in (None, False) and "default" not in (action.help or "")]
    assert not silent, f"gridgen {name}: the help of {silent} does not say the default"


def test_output_defaults_are_stated():
    by_name = {name: parser for name, _, parser in SUBCOMMANDS}
    out = next(a for a in by_name["run"]._actions if "--out" in a.option_strings)
    assert "out/<spec name>" in out.help
    output = next(a for a in by_name["export"]._actions if "-o" in a.option_strings)
    assert "./grid.png" in output.help and output.default == "grid.png"


def test_every_param_has_help():
    registry = P.Registry()
    missing = [param.name for param in registry if not (param.help or "").strip()]
    assert len(list(registry)) > 50 and not missing, f"params without help: {missing}"
