"""Cross-checks of a live process's PEB against sources that do not read the PEB.

A PEB is the process's own, writable memory: malware rewrites its image path
and command line ("PEB masquerading") and unlinks modules from the loader
lists to hide them. Each :class:`Check` puts one value read from the PEB
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
from typing import Any, Dict, Iterable, List, Optional

from ..errors import InvalidAddressError, KsinspectError
from .peb import Check as PebCheck

__all__ = ["Check", "PeHeader", "read_pe_header", "pe_header_checks", "PE_HEADER_READ"]

# The DOS header, NT headers and section table of every ordinary image fit
# in the first page (SizeOfHeaders is 0x400 for most linkers).
PE_HEADER_READ = 0x1000


@dataclass(frozen=True)
class Check(PebCheck):
    """One fact of the PEB beside the same fact from an independent source.

    The :class:`ksinspect.windows.peb.Check` the PEB carries, with the rule of
    comparison in words.

    Attributes:
        name: what is compared, e.g. ``command line vs /proc/PID/cmdline``.
        ours: the value read from the PEB (an int, a string, or None when it
            could not be read).
        theirs: the value from the independent source.
        agree: whether they agree under ``rule``.
        rule: how they are compared (normalisations applied), in words.
    """

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
