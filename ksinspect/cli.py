"""``ksinspect`` command line: parse, call the library, render.

No decoding happens here or in ksinspect.commands. Errors are one line on
stderr: exit status 2 for bad usage (including values given on the command
line that cannot be decoded), 1 for bad data; a traceback only with
``--debug``; a closed pipe is not an error.
"""
import os
import sys
from typing import IO, Optional, Sequence

from . import __version__
from .commands import breakpoints, decode, live, tables, memory, paging, windows
from .commands._args import Parser, UsageError
from .errors import KsinspectError
from .render import FORMATS

EXIT_DATA = 1
EXIT_USAGE = 2

# Each module adds its subcommands, in the order they are listed in --help.
COMMAND_MODULES = (decode, live, tables, memory, paging, windows, breakpoints)


def build_parser() -> Parser:
    output = Parser(add_help=False)
    group = output.add_argument_group("output")
    group.add_argument("--format", choices=FORMATS, default="table",
                       help="table (the default: an explanation for single values), json, "
                            "jsonl or csv")
    group.add_argument("--json", dest="format", action="store_const", const="json",
                       help="short for --format json")

    parser = Parser(prog="ksinspect", description="Inspect x86 / x86-64 kernel structures.")
    parser.add_argument("--version", action="version", version="ksinspect " + __version__)
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for module in COMMAND_MODULES:
        module.register(sub, output)
    return parser


def main(argv: Optional[Sequence[str]] = None, stream: Optional[IO[str]] = None,
         errors: Optional[IO[str]] = None) -> int:
    """Run the tool; returns the exit status (0, 1 bad data, 2 bad usage)."""
    out = stream or sys.stdout
    err = errors or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        return args.func(args, out)
    except UsageError as exc:
        err.write("ksinspect: error: %s\n" % exc)
        if debug:
            raise
        return EXIT_USAGE
    except KsinspectError as exc:
        err.write("ksinspect: error: %s\n" % exc)
        if debug:
            raise
        return EXIT_DATA
    except BrokenPipeError:
        # A closed pipe (e.g. `| head`) is not an error: silence the final flush.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
