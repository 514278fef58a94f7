"""What ``--help`` tells a new user (issue 18, items 22 and 28): every
positional argument says what it is, every command's help ends with
examples that run as written on the shipped data, descriptions are wrapped
alike, and the value decoders all draw pictures."""
import argparse
import os
import shlex

import pytest

from conftest import run_cli
from ksinspect.cli import build_parser, main
from ksinspect.commands.examples import EXAMPLES, LIVE
from ksinspect.live import linux

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _commands() -> dict:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


COMMANDS = _commands()


def _help(command: str, capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as ended:
        main([command, "--help"])
    assert ended.value.code == 0
    return capsys.readouterr().out


def test_every_command_has_examples_and_no_example_names_a_missing_command():
    assert sorted(EXAMPLES) == sorted(COMMANDS)
    for command, examples in EXAMPLES.items():
        assert 1 <= len(examples) <= 2, command
        for example in examples:
            assert shlex.split(example.line)[:2] == ["ksinspect", command], example


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_positional_argument_says_what_it_is(command):
    for action in COMMANDS[command]._actions:
        if not action.option_strings and action.help is not argparse.SUPPRESS:
            assert action.help and len(action.help) > 5, (command, action.dest)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_is_wrapped_and_ends_with_the_examples(command, capsys, monkeypatch):
    text = _help(command, capsys, monkeypatch)
    lines = text.rstrip("\n").split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("examples"))
    tail = lines[start + 1:]
    shown = [line.strip() for line in tail if line.startswith("  ksinspect ")]
    assert shown == [e.line for e in EXAMPLES[command]]
    assert all(line.startswith(("  ksinspect ", "  # ")) for line in tail), tail
    # Everything but the example lines fits the terminal (break's long
    # description was one line of 500 characters).
    long = [line for line in lines[:start] if len(line) > 80]
    assert not long, long


def _runnable():
    for command, examples in sorted(EXAMPLES.items()):
        for example in examples:
            if example.needs is None:
                yield pytest.param(example.line, id=example.line[10:60])
            elif example.needs == LIVE:
                yield pytest.param(example.line, id=example.line[10:60], marks=pytest.mark.skipif(
                    bool(linux.unavailable_reason()), reason="runs on this machine: Linux x86"))


@pytest.mark.parametrize("line", list(_runnable()))
def test_each_example_of_the_help_runs_on_the_shipped_data(line, monkeypatch):
    """Run from the source tree's root, as the help says."""
    monkeypatch.chdir(ROOT)
    status, out, err = run_cli(*shlex.split(line)[1:])
    assert status == 0, err
    assert out.strip()


def test_examples_that_cannot_run_here_say_what_they_need(capsys, monkeypatch):
    text = _help("pslist", capsys, monkeypatch)
    assert "needs a Windows kernel image" in text
    text = _help("live", capsys, monkeypatch)
    assert "on this machine" in text


def test_level_takes_hex_as_every_number_does():
    for level in ("0x2", "2", "0n2"):
        status, out, err = run_cli("pte", "80000000fee000e3", "--paging-mode", "4level",
                                   "--level", level, "--json")
        assert status == 0, err
        assert '"level": 2' in out


@pytest.mark.parametrize("argv", [("selector", "33"), ("dr6", "ffff4ff1")])
def test_selector_and_dr6_draw_svg_pictures_as_the_other_decoders(argv, tmp_path):
    picture = tmp_path / "value.svg"
    status, out, err = run_cli(*argv, "--svg", picture)
    assert status == 0, err
    svg = picture.read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<svg") and svg.rstrip().endswith("</svg>")
    # The bits drawn are the value's: selector 0x33 has RPL 3 (bits 1:0), index 6.
    assert ("RPL" in svg) if argv[0] == "selector" else ("B0" in svg and "BS" in svg)
