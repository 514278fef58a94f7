"""Cross-checks of a live process's PEB against sources that do not read the PEB.

A PEB is the process's own, writable memory: malware rewrites its image path
and command line ("PEB masquerading") and unlinks modules from the loader
lists to hide them. Each :class:`CrossCheck` puts one value read from the PEB
("ours") beside the same fact from an independent source ("theirs") and says
whether they agree, and by which rule. The live back-ends
(:mod:`ksinspect.live.wine`, :mod:`ksinspect.windows.live_windows`) build
them; the one shared by both is here: the PE header at a module's base
(parsed with pefile: the image as the loader mapped it) against SizeOfImage
and EntryPoint in its loader entry. (The three loader lists against each
other are compared by :func:`ksinspect.windows.peb.read_loader_lists`, whose
findings name unlinked modules.)
"""
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ..errors import DecodeError, InvalidAddressError, KsinspectError
from ._api import renamed_argument

__all__ = ["Check", "CrossCheck", "PeHeader", "read_pe_header", "pe_header_checks", "PE_HEADER_READ",
           "loader_list_checks", "LIST_NAMES"]

LIST_NAMES = {"load": "InLoadOrderModuleList", "memory": "InMemoryOrderModuleList",
              "init": "InInitializationOrderModuleList"}

# The DOS header, NT headers and section table of every ordinary image fit
# in the first page (SizeOfHeaders is 0x400 for most linkers).
PE_HEADER_READ = 0x1000


@dataclass(frozen=True)
class CrossCheck:
    """One fact of the PEB beside the same fact from an independent source.

    (The one check type: ``Check``, the name it had in both
    :mod:`ksinspect.windows.peb` and here, is this class too.)

    Attributes:
        name: what is compared, e.g. ``command line vs /proc/PID/cmdline``.
        ours: the value read from the PEB (an int, a string, or None when it
            could not be read).
        theirs: the value from the independent source.
        agree: whether they agree under ``rule``.
        rule: how they are compared (normalisations applied), in words.
    """

    name: str
    ours: Any
    theirs: Any
    agree: bool
    rule: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "ours": self.ours, "theirs": self.theirs,
                "agree": self.agree, "rule": self.rule}

    def __str__(self) -> str:
        return "%s %s: ours %s, theirs %s" % ("agree   " if self.agree else "DISAGREE",
                                              self.name, _show(self.ours), _show(self.theirs))


Check = CrossCheck      # the old name, kept: one class under both names


def _show(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return "%#x" % value
    return repr(value)


@dataclass(frozen=True)
class PeHeader:
    """What the PE optional header at a module base says (PE/COFF spec, "Optional
    Header Windows-Specific Fields")."""

    size_of_image: int
    entry_point: int        # absolute: base + AddressOfEntryPoint, 0 when it is 0
    machine: int


def read_pe_header(memory: Any, address: Optional[int] = None, *,
                   base: Optional[int] = None) -> PeHeader:
    """Parse the PE header the loader mapped at *address*, with pefile.

    (``base=`` is the old keyword of ``address``, accepted for one release.)

    Raises:
        InvalidAddressError: the header page is not readable.
        DecodeError: it is not a PE image (pefile's reason in the message).
    """
    import pefile

    base = renamed_argument("read_pe_header", "base", base, "address", address)
    data = memory.read(base, PE_HEADER_READ)
    try:
        pe = pefile.PE(data=data, fast_load=True)
    except pefile.PEFormatError as exc:
        raise DecodeError("no PE image at %#x: %s" % (base, exc.value)) from None
    try:
        optional = pe.OPTIONAL_HEADER
        entry = optional.AddressOfEntryPoint
        return PeHeader(optional.SizeOfImage, base + entry if entry else 0,
                        pe.FILE_HEADER.Machine)
    finally:
        pe.close()


def pe_header_checks(memory: Any, modules: Iterable[Any], image_base: int) -> List[Check]:
    """SizeOfImage (and, for the main image, the entry point) of every loader
    entry against the PE header mapped at its DllBase.

    Args:
        memory: the process's memory (``read(address, size)``).
        modules: loader entries with ``base``, ``size``, ``entry_point``, ``name``.
        image_base: PEB.ImageBaseAddress (the main image gets the entry-point check).
    """
    checks = []
    for module in modules:
        try:
            header: Optional[PeHeader] = read_pe_header(memory, module.base)
            problem = None
        except (InvalidAddressError, KsinspectError) as exc:
            header, problem = None, str(exc)
        label = "%s at %#x" % (module.name or "?", module.base)
        checks.append(Check(
            "SizeOfImage of %s: loader entry vs PE header" % label, module.size,
            header.size_of_image if header else problem,
            header is not None and header.size_of_image == module.size,
            "LDR_DATA_TABLE_ENTRY.SizeOfImage must equal IMAGE_OPTIONAL_HEADER.SizeOfImage "
            "of the image mapped at DllBase (parsed with pefile)"))
        if module.base == image_base:
            checks.append(Check(
                "entry point of %s: loader entry vs PE header" % label, module.entry_point,
                header.entry_point if header else problem,
                header is not None and header.entry_point == module.entry_point,
                "LDR_DATA_TABLE_ENTRY.EntryPoint must equal DllBase + AddressOfEntryPoint "
                "from the PE header"))
    return checks


def loader_list_checks(images: Sequence[Tuple[int, str, str]], modules: Sequence[Any],
                       image_base: int, source: str, what_is_an_image: str) -> List[Check]:
    """Images the memory manager has mapped against the loader's module lists.

    Each image must be a module on all three loader lists (the main image is
    not on the initialisation-order list). One summary check, and one failing
    check per image missing from a list: a module unlinked to hide it from
    tools that walk one list (EnumProcessModules, Toolhelp32), or an image
    mapped without the loader.

    Args:
        images: ``(base, file name, path)`` of every image mapped, from a
            source that does not read the loader lists (``/proc/PID/maps``
            under Wine, VirtualQueryEx on Windows).
        modules: the PEB's modules, with ``base`` and ``lists`` (``load``,
            ``memory``, ``init``: the lists that hold it).
        image_base: PEB.ImageBaseAddress.
        source: where *images* come from, for the checks' names.
        what_is_an_image: how *source* tells an image, for the rule.
    """
    by_base: Dict[int, Any] = {}
    for module in modules:
        by_base.setdefault(module.base, module)
    problems = []
    for base, name, path in images:
        module = by_base.get(base)
        expected = ("load", "memory") if base == image_base else ("load", "memory", "init")
        lists = tuple(module.lists) if module is not None else ()
        missing = [n for n in expected if n not in lists]
        if missing:
            problems.append((base, name, path, lists, missing))
    checks = [Check("PE images mapped in %s vs the loader lists" % source,
                    len(images) - len(problems), len(images), not problems,
                    what_is_an_image + " must be a module on the load-, memory- and "
                    "initialisation-order lists (the main image on the first two); ours counts "
                    "the images the lists hold completely, theirs the images mapped")]
    for base, name, path, lists, missing in problems:
        checks.append(Check(
            "PE image %s at %#x on the loader lists" % (name, base),
            "on %s; not on %s" % (", ".join(LIST_NAMES[n] for n in lists) or "no list",
                                  ", ".join(LIST_NAMES[n] for n in missing)),
            path, False,
            "a mapped image missing from a loader list was unlinked from it (or mapped "
            "without the loader)"))
    return checks
