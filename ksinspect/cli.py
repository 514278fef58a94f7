"""``ksinspect`` command line: parse, call the library, render.

No decoding happens here or in ksinspect.commands. Errors are one line on
stderr: exit status 2 for bad usage (including values given on the command
line that cannot be decoded), 1 for bad data; a traceback only with
``--debug``; a closed pipe is not an error.
"""
import importlib
import os
import signal
import sys
from typing import IO, Optional, Sequence

from . import __version__
from .commands import HelpFormatter, Parser, UsageError, standard_input_refused
from .commands.examples import epilog
from .errors import KsinspectError, OutputError
from .render import FORMATS
from .safe_text import printable

EXIT_DATA = 1
EXIT_USAGE = 2

# Each module of ksinspect.commands adds its subcommands, in the order they
# are listed in --help; the names each adds (tests/test_cli_lazy.py checks
# them against what register() adds). A command line that names one imports
# that module alone: importing all of them (the debugger, the Windows
# readers, triage...) took 0.4-0.7 s, more than `maps` needs for its first row.
COMMANDS = (
    ("decode", ("selector", "desc", "pte", "dr7", "dr6")),
    ("live", ("live",)),
    ("tables", ("gdt", "ldt", "idt")),
    ("memory", ("info",)),
    ("paging", ("vtop", "maps", "ptov", "read")),
    ("windows", ("layouts", "peb", "teb", "eprocess", "pslist", "psscan")),
    ("dump", ("threads", "modules")),
    ("breakpoints", ("break",)),
    ("debugging", ("events",)),
    ("control", ("cr0", "cr4", "efer", "rflags", "pf", "cpu-mode")),
    ("cpu", ("access", "tss")),
    ("triage", ("triage",)),
)
_MODULE_OF = {name: module for module, names in COMMANDS for name in names}


def command_modules(argv: Optional[Sequence[str]] = None) -> list:
    """The command modules a command line needs: the one of the command it
    names, or all of them (no command, --help, --version, an unknown name)."""
    if argv is not None:
        for arg in argv:
            if arg == "--":
                break
            if not arg.startswith("-"):
                module = _MODULE_OF.get(arg)
                if module is not None:
                    return [importlib.import_module(".commands." + module, __package__)]
                break
    return [importlib.import_module(".commands." + module, __package__)
            for module, _names in COMMANDS]


def build_parser(argv: Optional[Sequence[str]] = None) -> Parser:
    """The parser; given the command line, only with the subcommands it can name."""
    output = Parser(add_help=False)
    group = output.add_argument_group("output")
    # default None: main() fills in the command's default (table, unless the
    # command sets default_format, as triage does for output that is not a terminal).
    group.add_argument("--format", choices=FORMATS, default=None,
                       help="table (the default: an explanation for single values), json, "
                            "jsonl or csv")
    group.add_argument("--json", dest="format", action="store_const", const="json",
                       help="short for --format json")

    parser = Parser(prog="ksinspect", description="Inspect x86 / x86-64 kernel structures.")
    parser.add_argument("--version", action="version", version="ksinspect " + __version__)
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser,
                                help="ksinspect COMMAND --help: its options and examples")
    sub.required = True
    for module in command_modules(argv):
        module.register(sub, output)
    # One formatter for every command (descriptions wrapped alike), and the
    # examples each --help ends with, from ksinspect.commands.examples.
    for name, command in sub.choices.items():
        command.formatter_class = HelpFormatter
        command.epilog = epilog(name)
    return parser


class _Output:
    """The command's output stream: a write that fails (a full disk,
    /dev/full, a closed descriptor) becomes one OutputError line instead of
    a traceback; a closed pipe stays BrokenPipeError (not an error)."""

    def __init__(self, stream: Optional[IO[str]], name: str):
        self._stream = stream
        self.name = name
        self.failed = False

    def _fail(self, exc: Optional[OSError]) -> OutputError:
        self.failed = True
        why = "it is closed" if exc is None else (exc.strerror or str(exc))
        return OutputError("cannot write to %s: %s" % (self.name, why))

    def write(self, text: str) -> int:
        if self._stream is None:
            raise self._fail(None)
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except (OSError, ValueError) as exc:        # ValueError: I/O on a closed file
            raise self._fail(exc if isinstance(exc, OSError) else None) from None

    def flush(self) -> None:
        if self._stream is None:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except (OSError, ValueError) as exc:
            raise self._fail(exc if isinstance(exc, OSError) else None) from None

    def isatty(self) -> bool:
        try:
            return self._stream is not None and self._stream.isatty()
        except (OSError, ValueError):
            return False

    @property
    def buffer(self):
        """The binary stream under the text one (``read --raw``), or None."""
        return getattr(self._stream, "buffer", None)


def _say(err: Optional[IO[str]], line: str) -> None:
    """One line on stderr, escaped; stderr may be closed or failing: then silence."""
    if err is None:
        return
    try:
        err.write(printable(line) + "\n")
        err.flush()
    except (OSError, ValueError):
        pass


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's last flush of what could
    not be written does not print a second error (or fail the exit status)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


# Inputs read with mmap or seeks (images) or by path (symbols, registers,
# layouts): `-` would be taken for a file named "-". Lists of addresses
# (vtop --from-file) and of images (triage --list) do read standard input.
_FILE_ARGUMENTS = (("image", "IMAGE"), ("source", "SOURCE"), ("symbols", "--symbols"),
                   ("registers", "--registers"), ("layout", "--layout"))


def _refuse_standard_input(args) -> None:
    for attribute, name in _FILE_ARGUMENTS:
        if getattr(args, attribute, None) == "-":
            raise standard_input_refused(name, image=attribute in ("image", "source"))


def _take_debug(argv: list) -> tuple:
    """--debug is taken wherever it stands (before or after the command, as
    users type it), up to a ``--`` that ends the options."""
    end = argv.index("--") if "--" in argv else len(argv)
    kept = [a for a in argv[:end] if a != "--debug"] + argv[end:]
    return kept, len(kept) != len(argv)


def main(argv: Optional[Sequence[str]] = None, stream: Optional[IO[str]] = None,
         errors: Optional[IO[str]] = None) -> int:
    """Run the tool; returns the exit status (0, 1 bad data, 2 bad usage,
    128+N after signal N)."""
    err = errors if errors is not None else sys.stderr
    out = _Output(stream if stream is not None else sys.stdout, "standard output")
    argv, debug = _take_debug(list(sys.argv[1:] if argv is None else argv))
    try:
        args = build_parser(argv).parse_args(argv)
        args.errors = err               # where a command's notes go (stderr, or the caller's)
        _refuse_standard_input(args)
        if getattr(args, "format", "") is None:
            choose = getattr(args, "default_format", None)
            args.format = choose(out) if choose is not None else "table"
        status = args.func(args, out)
        out.flush()
        return status
    except UsageError as exc:
        _say(err, "ksinspect: error: %s" % exc)
        if debug:
            raise
        return EXIT_USAGE
    except KsinspectError as exc:
        _say(err, "ksinspect: error: %s" % exc)
        if out.failed and stream is None:
            _silence_stdout()
        if debug:
            raise
        return EXIT_DATA
    except BrokenPipeError:
        # A closed pipe (e.g. `| head`) is not an error: silence the final flush.
        if stream is None:
            _silence_stdout()
        return 0
    except KeyboardInterrupt as exc:
        if debug:
            raise
        signum = getattr(exc, "signum", signal.SIGINT)
        _say(err, "ksinspect: interrupted")
        return 128 + signum
