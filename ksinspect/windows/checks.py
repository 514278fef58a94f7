"""Cross-checks of a live process's PEB against sources that do not read the PEB.

A PEB is the process's own, writable memory: malware rewrites its image path
and command line ("PEB masquerading") and unlinks modules from the loader
lists to hide them. Each :class:`Check` puts one value read from the PEB
("ours") beside the same fact from an independent source ("theirs") and says
whether they agree, and by which rule. The live back-ends
(:mod:`ksinspect.live.wine`, :mod:`ksinspect.windows.live_windows`) build
them; the checks shared by both are here:

* the PE header at a module's base (parsed with pefile: the image as the
  loader mapped it) against SizeOfImage and EntryPoint in its loader entry;
* the three loader lists against each other: a module missing from one list
  but present in another was unlinked.
"""
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ..errors import InvalidAddressError, KsinspectError

__all__ = ["Check", "PeHeader", "read_pe_header", "pe_header_checks", "loader_list_checks",
           "PE_HEADER_READ"]

# The DOS header, NT headers and section table of every ordinary image fit
# in the first page (SizeOfHeaders is 0x400 for most linkers).
PE_HEADER_READ = 0x1000


@dataclass(frozen=True)
class Check:
    """One fact of the PEB beside the same fact from an independent source.

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


def read_pe_header(memory: Any, base: int) -> PeHeader:
    """Parse the PE header the loader mapped at *base*, with pefile.

    Raises:
        InvalidAddressError: the header page is not readable.
        KsinspectError: it is not a PE image (pefile's reason in the message).
    """
    import pefile

    data = memory.read(base, PE_HEADER_READ)
    try:
        pe = pefile.PE(data=data, fast_load=True)
    except pefile.PEFormatError as exc:
        raise KsinspectError("no PE image at %#x: %s" % (base, exc.value)) from None
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


def loader_list_checks(lists: Sequence[Tuple[str, Sequence[Any]]],
                       image_base: int) -> List[Check]:
    """The loader lists against each other.

    Every module is on InLoadOrderModuleList and InMemoryOrderModuleList;
    InInitializationOrderModuleList leaves out the main image (and, before it
    is initialised, a module being loaded). A module on one list but not on
    another was unlinked from it: the classic way to hide a DLL from
    tools that walk one list (EnumProcessModules, Toolhelp32).

    Args:
        lists: ``(list name, modules)`` pairs, the first being the list the
            report shows (InLoadOrderModuleList); modules have ``base`` and ``name``.
        image_base: PEB.ImageBaseAddress, excused from the initialisation-order list.

    Returns:
        One summary check per pair of lists (bases compared as sets), and one
        failing check per module missing from a list it should be on.
    """
    checks = []
    if not lists:
        return checks
    reference_name, reference = lists[0]
    names: Dict[int, str] = {}
    for _, modules in lists:
        for module in modules:
            names.setdefault(module.base, module.name or "?")
    bases = {name: {m.base for m in modules} for name, modules in lists}
    for other_name, _ in lists[1:]:
        excused = {image_base} if "Initialization" in other_name else set()
        ours = sorted(bases[reference_name] - excused)
        theirs = sorted(bases[other_name] - excused)
        checks.append(Check(
            "modules on %s vs %s" % (reference_name, other_name), len(ours), len(theirs),
            ours == theirs,
            "the same DllBase values must be on both lists (the main image is not on "
            "InInitializationOrderModuleList); the values compared are the counts"))
    everywhere = set().union(*bases.values())
    for base in sorted(everywhere):
        for list_name, _ in lists:
            if base in bases[list_name]:
                continue
            if "Initialization" in list_name and base == image_base:
                continue
            found_on = [n for n, _ in lists if base in bases[n]]
            checks.append(Check(
                "module %s at %#x on %s" % (names[base], base, list_name), "absent",
                "on " + ", ".join(found_on), False,
                "a module on one loader list must be on the others: it was unlinked"))
    return checks
