"""Argument parsing shared by the subcommands."""
import argparse
import functools

from ..errors import KsinspectError


class UsageError(Exception):
    """A command-line argument is wrong (exit status 2)."""


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that a paragraph holding line breaks (the
    examples a command's help ends with) is kept line for line; every other
    paragraph of a description or epilog is wrapped to the terminal."""

    def _fill_text(self, text, width, indent):
        paragraphs = []
        for paragraph in text.split("\n\n"):
            if "\n" in paragraph:
                paragraphs.append("\n".join(indent + line for line in paragraph.split("\n")))
            else:
                paragraphs.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(paragraphs)


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (the caller exits 2)."""

    def error(self, message):
        raise UsageError(message)


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_DEC_DIGITS = frozenset("0123456789")


def parse_int(text: str, what: str, bits: int = 64) -> int:
    """A number as analysts type it: hex by default (``0x`` optional, WinDbg's
    backtick separator allowed), decimal with the ``0n`` prefix. ASCII digits
    only: Python's int() also takes Arabic-Indic or fullwidth digits, which
    no one means as an address."""
    cleaned = text.strip().replace("`", "").replace("_", "")
    lower = cleaned.lower()
    if lower.startswith("0n"):
        digits, base, allowed = cleaned[2:], 10, _DEC_DIGITS
    else:
        digits, base, allowed = cleaned[2:] if lower.startswith("0x") else cleaned, 16, \
            _HEX_DIGITS
    if not digits or not set(digits) <= allowed:
        raise UsageError("argument %s: %s is not a %s number" % (
            what, _quoted(text), "decimal" if base == 10 else "hex"))
    value = int(digits, base)
    if value < 0 or value >> bits:
        raise UsageError("argument %s: %s does not fit in %d bits" % (what, text, bits))
    return value


def standard_input_refused(name: str, image: bool = False) -> UsageError:
    """The error for ``-`` given to an option that names a file read at random."""
    return UsageError("argument %s: standard input (-) cannot be read here: save it to a file "
                      "and give the file's name%s" % (
                          name, " (an image is mapped and read at random)" if image else ""))


def _quoted(text: str) -> str:
    """A command-line value in a message: quoted, control characters escaped."""
    return repr(text)


def count_argument(what: str, low: int, high: int):
    """An argparse type for a decimal count in low..high (ASCII digits only):
    anything else is a usage error (exit status 2) naming the option."""
    def parse(text: str) -> int:
        cleaned = text.strip()
        body = cleaned[1:] if cleaned[:1] in "+-" else cleaned
        if not body or not set(body) <= _DEC_DIGITS or len(body) > 40:
            raise UsageError("argument %s: %s is not a decimal number" % (what, _quoted(text)))
        value = int(cleaned, 10)
        if not low <= value <= high:
            raise UsageError("argument %s: %s is outside %d..%s" % (
                what, cleaned, low, "2^64-1" if high == (1 << 64) - 1 else high))
        return value
    return parse


def seconds_argument(what: str):
    """An argparse type for a positive, finite number of seconds."""
    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            value = float("nan")
        if not value > 0 or value == float("inf") or not all(
                c in "0123456789.eE+-" for c in text.strip()):
            raise UsageError("argument %s: %s is not a positive, finite number of seconds" % (
                what, _quoted(text)))
        return value
    return parse


def parse_hex_bytes(text: str, what: str) -> bytes:
    cleaned = "".join(text.split()).replace("0x", "").replace(",", "")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise UsageError("argument %s: %r is not a string of hex bytes" % (what, text)) from None


def split_breakpoint_spec(text: str, what: str, form: str) -> tuple:
    """Split ``FIRST:CONDITION:LENGTH[:EXTRA...]``, the shape shared by
    ``dr7 --set SLOT:...`` and ``break --hw ADDR:...``; LENGTH is decimal
    (1, 2, 4 or 8 bytes). The condition and the length are checked by the
    DR7 encoder. Returns (first, condition, length, extras)."""
    parts = text.split(":")
    if len(parts) < 3 or not all(p.strip() for p in parts[:3]):
        raise UsageError("argument %s: %r is not %s" % (what, text, form))
    try:
        length = int(parts[2], 10)
    except ValueError:
        raise UsageError("argument %s: %r: LENGTH is a decimal number of bytes (1, 2, 4 or 8)"
                         % (what, text)) from None
    return parts[0].strip(), parts[1].strip(), length, parts[3:]


def add_svg_option(parser) -> None:
    parser.add_argument("--svg", metavar="FILE",
                        help="also draw the value as an SVG picture in FILE (for slides)")


def write_svg(path, value) -> None:
    """Write value.to_svg() to path, before any other output, so a bad path
    leaves nothing half done.

    Raises:
        OutputError: the file cannot be written (exit status 1).
    """
    if path is None:
        return
    from ..errors import OutputError
    svg = value.to_svg()
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(svg)
    except OSError as exc:
        raise OutputError("cannot write the SVG picture to %s: %s" % (
            path, exc.strerror or exc)) from None


_OTHER_FILES = ("registers", "symbols", "from_file")


def names_input(attribute: str):
    """Decorate a command that reads the file ``args.<attribute>``: an error
    from the library whose message does not already name that file gets it
    as a prefix (``IMAGE: 0x7000: not present: ...``), so the one line on
    stderr always says which input was at fault."""
    def decorate(command):
        @functools.wraps(command)
        def run(args, *rest, **kwargs):
            try:
                return command(args, *rest, **kwargs)
            except KsinspectError as exc:
                path = getattr(args, attribute, None)
                # Files that the message may already blame instead (QEMU registers,
                # symbols, a list of addresses).
                named = [getattr(args, a, None) for a in (attribute,) + _OTHER_FILES]
                if path and not any(p and p in str(exc) for p in named):
                    exc.args = ("%s: %s" % (path, exc),) + tuple(exc.args[1:])
                raise
        return run
    return decorate


def add_max_decompressed(parser) -> None:
    """--max-decompressed MIB, for every command that opens a memory image."""
    from ..memory.image import MAX_DECOMPRESSED
    parser.add_argument("--max-decompressed", type=count_argument("--max-decompressed", 1,
                                                                  1 << 40),
                        metavar="MIB", default=None,
                        help="refuse compressed images larger than this once decompressed "
                             "(default %d MiB)" % (MAX_DECOMPRESSED >> 20))


def decompress_cap(args) -> int:
    """The decompression cap in bytes asked for on the command line (or the default)."""
    from ..memory.image import MAX_DECOMPRESSED
    given = getattr(args, "max_decompressed", None)
    return MAX_DECOMPRESSED if given is None else given << 20


def _stderr_line(args, kind: str, text: str) -> None:
    import sys
    from ..safe_text import printable
    stream = getattr(args, "errors", None) or sys.stderr
    stream.write("ksinspect: %s: %s\n" % (kind, printable(text)))


def warn(args, text: str) -> None:
    """One warning line on the command's stderr (control characters escaped)."""
    _stderr_line(args, "warning", text)


def note(args, text: str) -> None:
    """One note (how a result was obtained) on the command's stderr."""
    _stderr_line(args, "note", text)


def provenance(args, notes) -> None:
    """How a result was obtained (the table it was read from, the CR3 and
    paging mode it was read through, an inferred descriptor format, the
    layout used). A table prints these in its own text; with json, jsonl and
    csv each goes to stderr as one ``ksinspect: note:`` line, the one way a
    script sees them whatever the command (README, "The command line")."""
    if getattr(args, "format", "table") != "table":
        for line in notes:
            note(args, line)


def system_map(args, path: str):
    """The System.map / kallsyms at path; lines that are not symbols give one warning."""
    from ..symbols import SymbolTable
    symbols = SymbolTable.from_system_map(path)
    message = symbols.skipped_warning()
    if message is not None:
        warn(args, message)
    return symbols
