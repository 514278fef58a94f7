"""Find the Windows kernel image in memory and read its exports with pefile.

``PsInitialSystemProcess`` is an exported variable of ntoskrnl.exe that holds
the System process's EPROCESS address: a documented starting point for a
process-list walk (it is in the WDK headers, wdm.h). The kernel's base is
given, or found by scanning the kernel-half mappings of the address space for
a PE image (``MZ`` at a page start, ``e_lfanew`` -> ``PE\\0\\0``; Microsoft
"PE Format") whose export directory names ntoskrnl.exe or which exports
PsInitialSystemProcess.

pefile parses file layouts: a loaded image has each section at its RVA, not
at its file offset. The image is read page by page from memory (pages not in
the image read as zeros, counted), and its section headers are rewritten in
that copy so that PointerToRawData = VirtualAddress: pefile's RVA to offset
mapping then becomes the identity.
"""
import struct
from dataclasses import dataclass, field as dataclass_field
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from ..errors import (DecodeError, InvalidAddressError, KernelNotFoundError, KsinspectError,
                      WalkLimitError)

PAGE = 0x1000
KERNEL_NAMES = ("ntoskrnl.exe", "ntkrnlmp.exe", "ntkrnlpa.exe", "ntkrpamp.exe")
MAX_IMAGE = 64 << 20            # SizeOfImage beyond this is not a kernel
MAX_CANDIDATES = 4096           # MZ pages examined before the search gives up
MAX_PE_TRIED = 64               # PE images read in full (up to MAX_IMAGE each) and parsed
MAX_PE_BYTES = 256 << 20        # ... and their SizeOfImage, summed (ntoskrnl is 10-20 MiB)
# Mapped pages whose first two bytes are looked at, in address order, before the
# search gives up: 1 GiB of mappings, many times what Windows maps in front of nt
# (on x64 the system image space holds nt, hal and the boot drivers, a few hundred
# MiB; on x86 nt is loaded in the first 64 MiB of the kernel half). Each costs a
# Python call: the cap is reached in about a second, even where hostile tables
# map every page of the range.
MAX_PAGES_EXAMINED = 1 << 18
# Paging entries the walk of one search range may read (aliased tables can
# describe far more mappings than that range could hold).
MAX_WALK_ENTRIES = 1 << 24
# Where Windows loads its kernel: the x64 system image space (KASLR keeps nt in
# fffff800`00000000 .. fffff807`ffffffff), the x86 kernel half.
SEARCH_RANGES = {8: ((0xFFFFF80000000000, 0xFFFFF88000000000),),
                 4: ((0x80000000, 0x100000000),)}


@dataclass(frozen=True)
class KernelImage:
    """A PE image in kernel memory and the exports read from it."""

    base: int
    size: int
    name: Optional[str]                 # the export directory's DLL name
    machine: int
    timestamp: int
    exports: Dict[str, int]             # name -> RVA
    missing_pages: int = 0
    notes: Tuple[str, ...] = dataclass_field(default=())

    def export_va(self, name: str) -> int:
        """The virtual address of an export.

        Raises:
            KernelNotFoundError: the image does not export ``name``.
        """
        try:
            return self.base + self.exports[name]
        except KeyError:
            raise KernelNotFoundError("the image at %#x (%s) does not export %s" % (
                self.base, self.name or "no export name", name)) from None

    def __str__(self) -> str:
        return "%s at %#x, %#x bytes, %d exports" % (self.name or "PE image", self.base,
                                                     self.size, len(self.exports))


def _read_pages(space: Any, base: int, size: int) -> Tuple[bytearray, int]:
    image = bytearray(size)
    missing = 0
    for offset in range(0, size, PAGE):
        n = min(PAGE, size - offset)
        data, error = space.read_available(base + offset, n)
        image[offset:offset + len(data)] = data
        if error is not None:
            missing += 1
    return image, missing


def _headers(space: Any, base: int) -> Tuple[bytes, int, int]:
    """(first page, e_lfanew, SizeOfImage) of a PE image at base.

    Raises:
        DecodeError: no PE image there.
    """
    try:
        head = space.read(base, PAGE)
    except InvalidAddressError as exc:
        raise DecodeError("no PE image at %#x: %s" % (base, exc)) from None
    if head[:2] != b"MZ":
        raise DecodeError("no PE image at %#x: no MZ signature" % base)
    lfanew = struct.unpack_from("<I", head, 0x3C)[0]
    if lfanew > PAGE - 0x108 or head[lfanew:lfanew + 4] != b"PE\0\0":
        raise DecodeError("no PE image at %#x: e_lfanew %#x does not lead to PE\\0\\0"
                          % (base, lfanew))
    magic = struct.unpack_from("<H", head, lfanew + 24)[0]
    if magic not in (0x10B, 0x20B):
        raise DecodeError("no PE image at %#x: optional header magic %#x" % (base, magic))
    size_of_image = struct.unpack_from("<I", head, lfanew + 24 + 56)[0]
    if not PAGE <= size_of_image <= MAX_IMAGE:
        raise DecodeError("PE image at %#x: SizeOfImage %#x is implausible" % (
            base, size_of_image))
    return head, lfanew, size_of_image


def _as_file_layout(image: bytearray, lfanew: int) -> None:
    """Make each section's PointerToRawData its VirtualAddress (in place)."""
    sections, opt_size = struct.unpack_from("<HxxxxxxxxxxxxH", image, lfanew + 6)
    table = lfanew + 24 + opt_size
    for i in range(min(sections, 96)):
        at = table + 40 * i
        if at + 40 > len(image):
            break
        vsize, vaddr, rawsize = struct.unpack_from("<III", image, at + 8)
        struct.pack_into("<II", image, at + 16, max(vsize, rawsize), vaddr)


def read_kernel_image(space: Any, address: Optional[int] = None, *,
                      base: Optional[int] = None) -> KernelImage:
    """Read the PE image at ``address`` (its base) from memory and parse its
    exports with pefile (``base=``: the old keyword, accepted for one release).

    Raises:
        DecodeError: there is no PE image at the address, or pefile rejects it.
    """
    import pefile
    from ._api import renamed_argument

    base = renamed_argument("read_kernel_image", "base", base, "address", address)

    _, lfanew, size = _headers(space, base)
    image, missing = _read_pages(space, base, size)
    _as_file_layout(image, lfanew)
    try:
        pe = pefile.PE(data=bytes(image), fast_load=True)
        pe.parse_data_directories(directories=[
            pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_EXPORT"]])
    except pefile.PEFormatError as exc:
        raise DecodeError("PE image at %#x: pefile: %s" % (base, exc)) from None
    exports: Dict[str, int] = {}
    name = None
    directory = getattr(pe, "DIRECTORY_ENTRY_EXPORT", None)
    if directory is not None:
        if directory.name:
            name = directory.name.decode("ascii", "replace")
        for symbol in directory.symbols:
            if symbol.name:
                exports[symbol.name.decode("ascii", "replace")] = symbol.address
    notes = ()
    if missing:
        notes = ("%d of the image's %d pages are not in the memory image (read as zeros)" % (
            missing, (size + PAGE - 1) // PAGE),)
    return KernelImage(base, size, name, pe.FILE_HEADER.Machine, pe.FILE_HEADER.TimeDateStamp,
                       exports, missing, notes)


def _candidate_pages(space: Any, ranges: Iterable[Tuple[int, int]],
                     stopped: List[str]) -> Iterator[int]:
    """Page-aligned addresses in the kernel ranges whose first two bytes are MZ.

    Bounded: after MAX_PAGES_EXAMINED mapped pages, or a walk that reads
    MAX_WALK_ENTRIES entries, it says why in *stopped* and ends (that range).
    """
    memory = space.memory
    examined = 0
    for start, end in ranges:
        end = min(end, space.top)
        if start >= end:
            continue
        try:
            for m in space.mappings(start, end, max_entries=MAX_WALK_ENTRIES):
                first = (m.start + PAGE - 1) & ~(PAGE - 1)
                for va in range(first, m.start + m.size, PAGE):
                    if examined >= MAX_PAGES_EXAMINED:
                        stopped.append("the search stopped after looking at %d mapped pages "
                                       "(%d MiB), at %#x" % (examined, examined * PAGE >> 20, va))
                        return
                    examined += 1
                    try:
                        if memory.read(m.pa + (va - m.start), 2) == b"MZ":
                            yield va
                    except KsinspectError:
                        continue
        except WalkLimitError:
            stopped.append("the walk of %#x-%#x stopped after reading %d paging entries" % (
                start, end, MAX_WALK_ENTRIES))
        except KsinspectError:
            continue


def find_kernel(space: Any, pointer_size: int,
                ranges: Optional[Iterable[Tuple[int, int]]] = None) -> KernelImage:
    """Scan the kernel-half mappings for the kernel image.

    The search is bounded whatever the tables say: it looks at the first
    MAX_PAGES_EXAMINED mapped pages, reads at most MAX_PE_TRIED PE images
    (MAX_PE_BYTES in all) of the first MAX_CANDIDATES pages that start with
    MZ; where a cap ends it, the error says which.

    Raises:
        KernelNotFoundError: no PE image there names itself ntoskrnl.exe or
            exports PsInitialSystemProcess (the message says where it looked,
            the PE images it saw and why it stopped early, if it did).
    """
    ranges = list(ranges or SEARCH_RANGES[pointer_size])
    seen: List[str] = []
    tried = read_bytes = 0
    stopped: List[str] = []
    for count, va in enumerate(_candidate_pages(space, ranges, stopped)):
        if count >= MAX_CANDIDATES:
            stopped.append("the search stopped after %d pages starting with MZ" % MAX_CANDIDATES)
            break
        if tried >= MAX_PE_TRIED:
            # A flood of plausible PE headers (every page MZ... PE): each
            # would be read in full (up to 64 MiB) and parsed.
            stopped.append("the search stopped after reading %d PE images" % MAX_PE_TRIED)
            break
        try:
            size = _headers(space, va)[2]
        except DecodeError:
            continue
        if read_bytes + size > MAX_PE_BYTES:
            stopped.append("the search stopped after reading %d MiB of PE images" % (
                read_bytes >> 20))
            break
        tried += 1
        read_bytes += size
        try:
            image = read_kernel_image(space, va)
        except DecodeError:
            continue
        if (image.name or "").lower() in KERNEL_NAMES or "PsInitialSystemProcess" in \
                image.exports:
            return image
        seen.append("%s at %#x" % (image.name or "PE image", va))
    where = ", ".join("%#x-%#x" % r for r in ranges)
    raise KernelNotFoundError(
        "no kernel image (ntoskrnl.exe exporting PsInitialSystemProcess) is mapped in %s%s%s; "
        "give --kernel-base or --start" % (
            where, " (PE images seen: %s)" % ", ".join(seen[:5]) if seen else "",
            "".join(" (%s)" % reason for reason in stopped)))


def initial_system_process(space: Any, kernel: KernelImage, pointer_size: int) -> int:
    """The value of PsInitialSystemProcess: the System EPROCESS address.

    Raises:
        KernelNotFoundError: not exported; InvalidAddressError: not readable.
    """
    va = kernel.export_va("PsInitialSystemProcess")
    return int.from_bytes(space.read(va, pointer_size), "little")


__all__ = ["KERNEL_NAMES", "KernelImage", "KernelNotFoundError", "SEARCH_RANGES",
           "find_kernel", "initial_system_process", "read_kernel_image"]
