"""Argument parsing shared by the subcommands."""
import argparse
import functools

from ..errors import KsinspectError


class UsageError(Exception):
    """A command-line argument is wrong (exit status 2)."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (the caller exits 2)."""

    def error(self, message):
        raise UsageError(message)


def parse_int(text: str, what: str, bits: int = 64) -> int:
    """A number as analysts type it: hex by default (``0x`` optional, WinDbg's
    backtick separator allowed), decimal with the ``0n`` prefix."""
    cleaned = text.strip().replace("`", "").replace("_", "")
    try:
        if cleaned.lower().startswith("0n"):
            value = int(cleaned[2:], 10)
        else:
            value = int(cleaned[2:] if cleaned.lower().startswith("0x") else cleaned, 16)
    except ValueError:
        raise UsageError("argument %s: %r is not a hex number" % (what, text)) from None
    if value < 0 or value >> bits:
        raise UsageError("argument %s: %s does not fit in %d bits" % (what, text, bits))
    return value


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
