"""The options many commands share, declared once, each with the type that
parses its value: the memory image and what completes it (``--registers``,
``--max-decompressed``), the page tables (``--cr3``, ``--paging-mode`` with
its ``--mode`` alias), the Windows build (``--layout``) and a symbol table
(``--symbols``). A command receives parsed values (``args.cr3`` is an int,
``args.layout`` a Layout) and opens its image with :func:`open_memory`."""
import argparse
import contextlib

from ..errors import NoCpuStateError
from ..modes import MAXPHYADDR_RANGE, PagingMode
from ._args import (UsageError, add_max_decompressed, count_argument, decompress_cap, parse_int,
                    provenance, standard_input_refused, system_map)

IMAGE_HELP = "memory image (raw, LiME, ELF core; .xz/.gz)"
REGISTERS_HELP = ("QEMU `info registers` output completing the image's CPU state (a regular "
                  "file, at most 4 MiB)")
LAYOUT_HELP = ("Windows build: a name from `ksinspect layouts`, a unique part of one, or a "
               "layout JSON / Volatility 3 ISF file (.xz/.gz ok; a regular file of at most "
               "128 MiB once decompressed)")
WINDOWS_MODE_HELP = ("paging mode (default: the image's; else 4level for x64 layouts, pae for "
                     "x86; --mode is an alias)")


def address_argument(what: str, bits: int = 64):
    """An argparse type for a number as analysts type it (hex, ``0n`` decimal)."""
    def parse(text: str) -> int:
        return parse_int(text, what, bits)
    return parse


def add_image(parser, help_text: str = IMAGE_HELP, metavar: str = "IMAGE", **kwargs) -> None:
    """The positional memory image (``args.image``), and --max-decompressed for it."""
    parser.add_argument("image", metavar=metavar, help=help_text, **kwargs)
    add_max_decompressed(parser)


def add_registers(parser, help_text: str = REGISTERS_HELP) -> None:
    parser.add_argument("--registers", metavar="FILE", help=help_text)


def open_memory(args, source: str = "image"):
    """The image named by ``args.<source>``, completed by --registers, capped by
    --max-decompressed."""
    from ..memory import open_image
    return open_image(getattr(args, source), registers=getattr(args, "registers", None),
                      max_decompressed=decompress_cap(args))


def add_cr3(parser, help_text: str) -> None:
    """--cr3 X, parsed to an int (``args.cr3``, None when not given)."""
    parser.add_argument("--cr3", metavar="X", type=address_argument("--cr3"), help=help_text)


# -- the paging options, one set of names for every command that reads through page
# tables. --paging-mode is the paging mode everywhere; --descriptor-format is the
# descriptor format (legacy/long) of gdt/ldt/idt/desc. `--mode` stays an alias of
# whichever it meant in each command (gdt/ldt/idt take either kind of value).

PAGING_MODE_NAMES = tuple(m.value for m in PagingMode)      # 32, pae, 4level, 5level
DESCRIPTOR_FORMATS = ("legacy", "long")


def add_paging_mode(parser, help_text: str, alias: bool = True, **kwargs) -> None:
    """--paging-mode (dest ``mode``), with ``--mode`` as its alias."""
    names = ("--paging-mode", "--mode") if alias else ("--paging-mode",)
    parser.add_argument(*names, dest="mode", choices=PAGING_MODE_NAMES, metavar="MODE",
                        help="32, pae, 4level or 5level: " + help_text, **kwargs)


class _EitherMode(argparse.Action):
    """gdt/ldt/idt's old --mode: legacy/long is the descriptor format, a paging
    mode's name is the paging mode (the two sets of values do not overlap)."""

    def __call__(self, parser, namespace, value, option_string=None):
        setattr(namespace, "descriptor_format" if value in DESCRIPTOR_FORMATS else "paging_mode",
                value)


def add_table_modes(parser) -> None:
    """--descriptor-format and --paging-mode for the descriptor-table commands."""
    parser.add_argument("--descriptor-format", choices=DESCRIPTOR_FORMATS,
                        help="legacy (protected-mode, 8-byte system descriptors) or long "
                             "(IA-32e, 16-byte); inferred (and said so) when not given")
    parser.add_argument("--paging-mode", choices=PAGING_MODE_NAMES, metavar="MODE",
                        help="32, pae, 4level or 5level: paging mode that translates a "
                             "linear --base (default: from the image's CR0/CR4/EFER; needed "
                             "with --cr3 for an image without CPU state)")
    parser.add_argument("--mode", action=_EitherMode, choices=DESCRIPTOR_FORMATS +
                        PAGING_MODE_NAMES, help="alias: legacy/long for --descriptor-format, "
                                                "a paging mode for --paging-mode")


def add_page_tables(parser, cr3_help: str, mode_help: str) -> None:
    """--cr3, --paging-mode/--mode and --registers: the page tables to read through."""
    add_cr3(parser, cr3_help)
    add_paging_mode(parser, mode_help)
    add_registers(parser)


def add_maxphyaddr(parser, help_text: str) -> None:
    """--maxphyaddr N, in the range the walker accepts (ksinspect.modes)."""
    low, high = MAXPHYADDR_RANGE
    parser.add_argument("--maxphyaddr", type=count_argument("--maxphyaddr", low, high),
                        default=high, metavar="N", help=help_text)


# The option that gives each value AddressSpace reads from the CPU state.
_OPTION_FOR = {"cr3": "--cr3", "mode": "--paging-mode"}


@contextlib.contextmanager
def page_table_options(image: str, more: str = ""):
    """Around a library call that reads through page tables: the library's
    NoCpuStateError (an image without CPU state, and no CR3 or paging mode
    given) becomes a usage error naming only the options missing.

    Raises:
        UsageError: what the library found missing, as options.
    """
    try:
        yield
    except NoCpuStateError as exc:
        names = [_OPTION_FOR[m] for m in exc.missing]
        raise UsageError("argument %s: %s carries no CPU state: give %s%s" % (
            "/".join(names), image, " and ".join(names), more)) from None


def page_tables_note(space) -> str:
    """The provenance line of a result read through an AddressSpace (the
    words gdt/ldt/idt use: "read through CR3 0x487c000 (4level paging)")."""
    return "read through CR3 %#x (%s paging)" % (space.cr3, space.mode.value)


def note_page_tables(args, space) -> None:
    """For json/jsonl/csv: the CR3 and paging mode a command read through,
    on stderr as a ``ksinspect: note:`` line (ksinspect.commands._args.provenance)."""
    provenance(args, [page_tables_note(space)])


# -- the Windows build ---------------------------------------------------------------------

def layout_argument(text: str, option: str = "--layout"):
    """A --layout value as a Layout; an unknown build is a usage error naming close ones."""
    from ..errors import UnknownLayoutError
    from ..windows.layout_files import load_layout
    if text == "-":
        raise standard_input_refused(option)
    try:
        return load_layout(text)
    except UnknownLayoutError as exc:
        raise UsageError("argument %s: %s" % (option, exc)) from None


def add_layout(parser, help_text: str = LAYOUT_HELP, required: bool = False) -> None:
    """--layout L, loaded (``args.layout`` is a Layout, None when not given)."""
    parser.add_argument("--layout", metavar="L", type=layout_argument, required=required,
                        help=help_text)


# -- symbols -------------------------------------------------------------------------------

def add_symbols(parser, help_text: str, pe: bool = False) -> None:
    """--symbols FILE (read by :func:`load_symbols`); with ``pe``, also
    --image-base for a PE kernel given as the symbols."""
    parser.add_argument("--symbols", metavar="FILE", help=help_text)
    if pe:
        parser.add_argument("--image-base", metavar="ADDRESS",
                            type=address_argument("--image-base"),
                            help="load address of the PE kernel given to --symbols")


def load_symbols(args):
    """The SymbolTable that --symbols names (a PE kernel at --image-base, else a
    System.map / kallsyms), or None without --symbols."""
    if getattr(args, "symbols", None) is None:
        return None
    if getattr(args, "image_base", None) is not None:
        from ..symbols import SymbolTable
        return SymbolTable.from_pe(args.symbols, args.image_base)
    return system_map(args, args.symbols)
