"""ELF core files (ET_CORE): QEMU ``dump-guest-memory``, kdump ``/proc/vmcore``.

Read from the System V ABI (``gabi``: ELF header, program header, note
section) as it applies to cores: each PT_LOAD's ``p_paddr`` is the physical
address (QEMU and the kernel's vmcore both set it), ``p_filesz`` bytes are
stored at ``p_offset``, and the part of ``p_memsz`` past ``p_filesz`` is not
in the file (it is absent, not zero). PT_NOTE segments hold 4-byte aligned
notes: ``namesz, descsz, type``, the name, the descriptor.

Every header field is checked against the file size before it is used.
"""
import struct
from typing import List, Optional

from ..errors import ImageFormatError
from ._parsed import MAX_NOTES, MAX_SEGMENTS, ParsedImage
from .cpu import parse_prstatus, parse_qemu_note

ELF_MAGIC = b"\x7fELF"
ET_CORE = 4
PT_LOAD = 1
PT_NOTE = 4
PN_XNUM = 0xFFFF
NT_PRSTATUS = 1
EM_386 = 3
EM_X86_64 = 62
MACHINES = {EM_386: "i386", EM_X86_64: "x86_64"}
_ET_NAMES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}

# (ehdr format, ehdr size, phdr format, phdr size, shdr size, sh_info offset)
_CLASSES = {
    1: (struct.Struct("<HHIIIIIHHHHHH"), 52, struct.Struct("<IIIIIIII"), 32, 40, 28),
    2: (struct.Struct("<HHIQQQIHHHHHH"), 64, struct.Struct("<IIQQQQQQ"), 56, 64, 44),
}
_NHDR = struct.Struct("<III")
_MAX_DESC_COPY = 1 << 20       # VMCOREINFO is a few KiB; never copy more than this


def _align4(n: int) -> int:
    return (n + 3) & ~3


def parse(buf, size: int, name: str) -> ParsedImage:
    """Parse an ELF core held in ``buf`` (bytes or mmap) of ``size`` bytes.

    Raises:
        ImageFormatError: not a little-endian ELF core, or a header, segment
            or note that does not fit in the file.
    """
    if size < 16:
        raise ImageFormatError("%s: truncated ELF header: the file has %d bytes" % (name, size))
    ei_class, ei_data = buf[4], buf[5]
    if ei_class not in _CLASSES:
        raise ImageFormatError("%s: ELF class %d is neither ELFCLASS32 (1) nor ELFCLASS64 (2)"
                               % (name, ei_class))
    if ei_data != 1:
        raise ImageFormatError("%s: ELF data encoding %d is not little-endian (1); x86 cores "
                               "are little-endian" % (name, ei_data))
    ehdr, ehdr_size, phdr, phdr_size, shdr_size, sh_info_at = _CLASSES[ei_class]
    bits = 32 if ei_class == 1 else 64
    if size < ehdr_size:
        raise ImageFormatError("%s: truncated ELF header: %d bytes, an ELF%d header needs %d"
                               % (name, size, bits, ehdr_size))
    (e_type, e_machine, _version, _entry, e_phoff, e_shoff, _flags, _ehsize, e_phentsize,
     e_phnum, e_shentsize, _shnum, _shstrndx) = ehdr.unpack_from(buf, 16)
    if e_type != ET_CORE:
        raise ImageFormatError("%s: ELF type %s is not ET_CORE (4): not a memory dump" % (
            name, _ET_NAMES.get(e_type, str(e_type))))
    arch = MACHINES.get(e_machine)
    parsed = ParsedImage(format="elf", description="ELF%d core, e_machine %d (%s)" % (
        bits, e_machine, arch or "not x86"), machine=e_machine)
    if arch is None:
        parsed.warnings.append("e_machine %d is not x86 (3) or x86-64 (62): the CPU state "
                               "notes are not read" % e_machine)

    phnum = e_phnum
    if e_phnum == PN_XNUM:
        # More than 0xfffe segments: the count is in section header 0's sh_info.
        if e_shoff == 0 or e_shentsize < shdr_size or e_shoff > size - shdr_size:
            raise ImageFormatError("%s: e_phnum is PN_XNUM but section header 0 (offset %#x, "
                                   "%d bytes) is not in the file (%d bytes)" % (
                                       name, e_shoff, e_shentsize, size))
        phnum = struct.unpack_from("<I", buf, e_shoff + sh_info_at)[0]
    if phnum == 0:
        raise ImageFormatError("%s: the ELF core has no program headers, so no memory" % name)
    if phnum > MAX_SEGMENTS:
        raise ImageFormatError("%s: %d program headers is more than the %d this reader accepts"
                               % (name, phnum, MAX_SEGMENTS))
    if e_phentsize < phdr_size:
        raise ImageFormatError("%s: e_phentsize %d is smaller than an ELF%d program header (%d)"
                               % (name, e_phentsize, bits, phdr_size))
    if e_phoff > size or phnum * e_phentsize > size - e_phoff:
        raise ImageFormatError("%s: the program header table (%d entries of %d bytes at offset "
                               "%#x) runs past the end of the file (%d bytes)" % (
                                   name, phnum, e_phentsize, e_phoff, size))

    loads = []
    notes = []
    # One C-speed pass over the table (PN_XNUM allows a million headers);
    # a table of oversized entries is read entry by entry.
    if e_phentsize == phdr_size:
        # A copy (at most 56 MiB), so no view of the mapping outlives an error.
        rows = phdr.iter_unpack(bytes(buf[e_phoff:e_phoff + phnum * phdr_size]))
    else:
        rows = (phdr.unpack_from(buf, e_phoff + i * e_phentsize) for i in range(phnum))
    for index, row in enumerate(rows):
        if bits == 64:
            p_type, _pflags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, _align = row
        else:
            p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, _pflags, _align = row
        if p_type == PT_LOAD:
            loads.append((index, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz))
        elif p_type == PT_NOTE:
            if p_offset > size or p_filesz > size - p_offset:
                raise ImageFormatError("%s: PT_NOTE (program header %d) at offset %#x with %d "
                                       "bytes runs past the end of the file (%d bytes)" % (
                                           name, index, p_offset, p_filesz, size))
            notes.append((index, p_offset, p_filesz))

    if not loads:
        raise ImageFormatError("%s: the ELF core has no PT_LOAD segment, so no memory" % name)
    if all(p[3] == 0 for p in loads) and any(p[2] != 0 for p in loads):
        raise ImageFormatError("%s: every PT_LOAD has p_paddr 0 but p_vaddr is set: the core "
                               "records virtual addresses only (a process core?), not the "
                               "physical layout" % name)
    for index, p_offset, _vaddr, p_paddr, p_filesz, p_memsz in loads:
        if p_offset > size or p_filesz > size - p_offset:
            raise ImageFormatError("%s: PT_LOAD (program header %d, paddr %#x) stores %d bytes "
                                   "at offset %#x, past the end of the file (%d bytes)" % (
                                       name, index, p_paddr, p_filesz, p_offset, size))
        stored = p_filesz
        if p_filesz > p_memsz:
            parsed.warnings.append("PT_LOAD %d: p_filesz %#x > p_memsz %#x; only p_memsz bytes "
                                   "are used" % (index, p_filesz, p_memsz))
            stored = p_memsz
        if p_paddr + max(p_memsz, stored) > 1 << 64:
            raise ImageFormatError("%s: PT_LOAD (program header %d) at paddr %#x with %#x bytes "
                                   "runs past the end of the physical address space" % (
                                       name, index, p_paddr, p_memsz))
        if stored:
            parsed.runs.append((p_paddr, stored, p_offset))
        if p_memsz > stored:
            parsed.absent.append((p_paddr + stored, p_memsz - stored))

    note_count = 0
    names: List[str] = []
    for index, offset, length in notes:
        note_count = parse_notes(buf, offset, length, index, arch, name, parsed, names,
                                  note_count)
    if names:
        parsed.description += "; notes: " + ", ".join(
            "%s x%d" % (n, names.count(n)) for n in dict.fromkeys(names))
    if "QEMU" in names:
        parsed.format = "elf-qemu"
    elif parsed.vmcoreinfo is not None:
        parsed.format = "elf-kdump"
    return parsed


def _note_label(owner: str, n_type: int) -> str:
    if owner == "CORE" and n_type == NT_PRSTATUS:
        return "CORE/NT_PRSTATUS"
    if owner == "QEMU" and n_type == 0:
        return "QEMU"
    if owner == "VMCOREINFO":
        return "VMCOREINFO"
    return "%s/%d" % (owner, n_type)


def parse_notes(buf, start: int, length: int, phindex: int, arch: Optional[str], name: str,
                parsed: ParsedImage, names: List[str], count: int) -> int:
    """Read the ELF notes in buf[start:start + length] (PT_NOTE ``phindex``) into
    ``parsed`` (CPU states, NT_PRSTATUS, VMCOREINFO) and their names into
    ``names``; returns ``count`` plus the notes read. A compressed kdump's
    notes have the same form (memory/kdump.py)."""
    end = start + length
    pos = start
    while pos < end:
        if end - pos < _NHDR.size:
            if any(buf[pos:end]):
                raise ImageFormatError("%s: PT_NOTE %d: %d bytes at offset %#x are too short "
                                       "for a note header" % (name, phindex, end - pos, pos))
            break                         # zero padding at the end of the segment
        namesz, descsz, n_type = _NHDR.unpack_from(buf, pos)
        if namesz == 0 and descsz == 0 and n_type == 0:
            if any(buf[pos:end]):
                parsed.warnings.append("PT_NOTE %d: an empty note header at offset %#x, then "
                                       "data; the rest of the segment is ignored" % (phindex, pos))
            break                         # zero padding
        name_at = pos + _NHDR.size
        desc_at = name_at + _align4(namesz)
        if desc_at > end or descsz > end - desc_at:
            raise ImageFormatError("%s: note at offset %#x (namesz %d, descsz %d) runs past the "
                                   "end of its PT_NOTE segment (program header %d, ends at "
                                   "offset %#x)" % (name, pos, namesz, descsz, phindex, end))
        count += 1
        if count > MAX_NOTES:
            raise ImageFormatError("%s: more than %d ELF notes" % (name, MAX_NOTES))
        owner = bytes(buf[name_at:name_at + min(namesz, 64)]).rstrip(b"\0").decode("latin-1")
        where = "%s: note %s at offset %#x" % (name, owner or "(no name)", pos)
        names.append(_note_label(owner, n_type))
        if owner == "QEMU" and n_type == 0:
            if arch is not None:
                cpu = parse_qemu_note(bytes(buf[desc_at:desc_at + min(descsz, 4096)]), arch,
                                      where)
                if cpu is None:
                    parsed.warnings.append("%s: QEMU CPU-state note version %d is not known "
                                           "(1 is); CPU state not read" % (
                                               where, struct.unpack_from("<I", buf, desc_at)[0]))
                else:
                    parsed.cpus.append(cpu)
        elif owner == "CORE" and n_type == NT_PRSTATUS and arch is not None:
            regs = parse_prstatus(bytes(buf[desc_at:desc_at + min(descsz, 4096)]), arch)
            if regs is None:
                parsed.warnings.append("%s: NT_PRSTATUS of %d bytes is too short for %s "
                                       "registers" % (where, descsz, arch))
            else:
                parsed.prstatus.append(regs)
        elif owner == "VMCOREINFO" and parsed.vmcoreinfo is None:
            parsed.vmcoreinfo = bytes(buf[desc_at:desc_at + min(descsz, _MAX_DESC_COPY)]) \
                .rstrip(b"\0").decode("latin-1")
        pos = desc_at + _align4(descsz)
    return count
