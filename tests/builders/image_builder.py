"""Build small memory images for tests: raw, LiME, and ELF32 / ELF64 cores
with an optional QEMU CPU-state note.

Written from the specifications, independently of ksinspect.memory:

* ELF: System V gABI, "ELF Header", "Program Header", "Note Section"
  (Elf64_Ehdr 64 bytes, Elf64_Phdr 56, Elf32_Ehdr 52, Elf32_Phdr 32; notes
  are namesz, descsz, type, then name and desc each padded to 4 bytes).
* QEMU's note: target/i386/arch_dump.c ``struct QEMUCPUState`` (version 1:
  uint32 version, size; 18 uint64 registers rax..r15, rip, rflags; ten
  ``QEMUCPUSegment`` {uint32 selector, limit, flags, pad; uint64 base} for
  cs ds es fs gs ss ldt tr gdt idt; uint64 cr[5]; uint64 kernel_gs_base).
* LiME: Documentation/README.md of LiME, "lime" format (32-byte header:
  uint32 magic 0x4C694D45, uint32 version 1, uint64 s_addr, uint64 e_addr
  inclusive, 8 reserved bytes).

Typical use for page-table tests::

    pages = {0x1000: qword_page({0: 0x2003}), 0x2000: qword_page({5: 0x5003})}
    core = build_elf_core(runs_from_pages(pages), qemu_state=qemu_cpu_state(cr3=0x1000))
    memory = ksinspect.memory.open_image_bytes(core)
"""
import struct
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

EM_386 = 3
EM_X86_64 = 62
ET_CORE = 4
PT_LOAD = 1
PT_NOTE = 4
NT_PRSTATUS = 1
PAGE = 4096
LIME_MAGIC = 0x4C694D45

# A run is (physical address, data) or (physical address, data, p_memsz) where
# p_memsz > len(data) declares memory the file does not store.
RunSpec = Union[Tuple[int, bytes], Tuple[int, bytes, int]]

_QEMU_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
              "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")
_QEMU_SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt")


# -- page helpers ---------------------------------------------------------------------

def qword_page(entries: Dict[int, int], size: int = PAGE) -> bytes:
    """A page of 64-bit entries (PAE / IA-32e tables): {index: value}, zero elsewhere."""
    page = bytearray(size)
    for index, value in entries.items():
        struct.pack_into("<Q", page, index * 8, value)
    return bytes(page)


def dword_page(entries: Dict[int, int], size: int = PAGE) -> bytes:
    """A page of 32-bit entries (32-bit paging tables): {index: value}, zero elsewhere."""
    page = bytearray(size)
    for index, value in entries.items():
        struct.pack_into("<I", page, index * 4, value)
    return bytes(page)


def runs_from_pages(pages: Dict[int, bytes]) -> List[Tuple[int, bytes]]:
    """Merge {physical address: data} into runs of contiguous memory, sorted."""
    runs: List[Tuple[int, bytes]] = []
    for address in sorted(pages):
        data = pages[address]
        if runs and runs[-1][0] + len(runs[-1][1]) == address:
            runs[-1] = (runs[-1][0], runs[-1][1] + data)
        else:
            runs.append((address, data))
    return runs


# -- raw and LiME ---------------------------------------------------------------------

def build_raw(runs: Sequence[Tuple[int, bytes]], fill: int = 0) -> bytes:
    """A flat image from address 0: each run's data at its address, ``fill`` between."""
    end = max((a + len(d) for a, d in runs), default=0)
    image = bytearray([fill]) * end
    for address, data in runs:
        image[address:address + len(data)] = data
    return bytes(image)


def lime_header(s_addr: int, e_addr: int, magic: int = LIME_MAGIC, version: int = 1) -> bytes:
    return struct.pack("<IIQQ8x", magic, version, s_addr, e_addr)


def build_lime(runs: Sequence[Tuple[int, bytes]], magic: int = LIME_MAGIC,
               version: int = 1) -> bytes:
    """A LiME image: one 32-byte header (e_addr inclusive) and the data per run."""
    out = bytearray()
    for address, data in runs:
        out += lime_header(address, address + len(data) - 1, magic, version) + data
    return bytes(out)


# -- ELF notes -------------------------------------------------------------------------

def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def build_note(name: str, n_type: int, desc: bytes) -> bytes:
    """One ELF note (the name gets its NUL; name and desc padded to 4 bytes)."""
    raw = name.encode() + b"\0"
    return struct.pack("<III", len(raw), len(desc), n_type) + _pad4(raw) + _pad4(desc)


def qemu_cpu_state(**overrides) -> dict:
    """A QEMU CPU state like a 64-bit Linux kernel's (the x86_64-4level fixture's
    values); keyword arguments replace fields. Segments are dicts with
    selector, limit, flags, base; ``cr`` is a list of five."""
    state = {name: 0 for name in _QEMU_GPRS}
    state.update(rip=0xFFFFFFFF81A592EB, rsp=0xFFFFFFFF82A03E98, rflags=0x246)
    seg = lambda selector=0, limit=0, flags=0, base=0: dict(  # noqa: E731
        selector=selector, limit=limit, flags=flags, base=base)
    state.update(
        cs=seg(0x10, 0xFFFFFFFF, 0x00AF9B00), ss=seg(0x18, 0xFFFFFFFF, 0x00CF9300),
        ds=seg(), es=seg(), fs=seg(), gs=seg(base=0xFFFF888007A00000),
        ldt=seg(flags=0x8200), tr=seg(0x40, 0x4087, 0x8900, 0xFFFFFE0000003000),
        gdt=seg(limit=0x7F, base=0xFFFFFE0000001000), idt=seg(limit=0xFFF,
                                                              base=0xFFFFFE0000000000))
    state["cr"] = [0x80050033, 0, 0x5E22C0, 0x1000, 0x750EF0]
    state["kernel_gs_base"] = 0
    state["version"] = 1
    state.update(overrides)
    return state


def pack_qemu_state(state: dict, with_kernel_gs_base: bool = True) -> bytes:
    """The QEMUCPUState descriptor (440 bytes, or 432 without kernel_gs_base).
    ``size`` in ``state`` overrides the struct's own size field."""
    body = bytearray()
    body += struct.pack("<18Q", *(state[name] for name in _QEMU_GPRS))
    for name in _QEMU_SEGMENTS:
        s = state[name]
        body += struct.pack("<IIIIQ", s["selector"], s["limit"], s["flags"], 0, s["base"])
    body += struct.pack("<5Q", *state["cr"])
    if with_kernel_gs_base:
        body += struct.pack("<Q", state["kernel_gs_base"])
    size = state.get("size", 8 + len(body))
    return struct.pack("<II", state.get("version", 1), size) + bytes(body)


def prstatus_x86_64(regs: Dict[str, int], pid: int = 1) -> bytes:
    """Linux x86-64 struct elf_prstatus (336 bytes): pr_pid at 32, pr_reg at 112."""
    order = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
             "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base",
             "gs_base", "ds", "es", "fs", "gs")
    desc = bytearray(336)
    struct.pack_into("<I", desc, 32, pid)
    struct.pack_into("<27Q", desc, 112, *(regs.get(n, 0) for n in order))
    return bytes(desc)


# -- ELF cores -------------------------------------------------------------------------

def _ehdr(elf_class: int, machine: int, phoff: int, phnum: int, shoff: int = 0,
          shnum: int = 0, e_type: int = ET_CORE) -> bytes:
    ident = b"\x7fELF" + bytes([2 if elf_class == 64 else 1, 1, 1]) + b"\0" * 9
    if elf_class == 64:
        return ident + struct.pack("<HHIQQQIHHHHHH", e_type, machine, 1, 0, phoff, shoff, 0,
                                   64, 56, phnum, 64 if shnum else 0, shnum, 0)
    return ident + struct.pack("<HHIIIIIHHHHHH", e_type, machine, 1, 0, phoff, shoff, 0,
                               52, 32, phnum, 40 if shnum else 0, shnum, 0)


def _phdr(elf_class: int, p_type: int, offset: int, vaddr: int, paddr: int, filesz: int,
          memsz: int, align: int = 0) -> bytes:
    if elf_class == 64:
        return struct.pack("<IIQQQQQQ", p_type, 4 if p_type == PT_NOTE else 7, offset, vaddr,
                           paddr, filesz, memsz, align)
    return struct.pack("<IIIIIIII", p_type, offset, vaddr, paddr, filesz, memsz,
                       4 if p_type == PT_NOTE else 7, align)


def build_elf_core(runs: Sequence[RunSpec], qemu_state: Optional[dict] = None,
                   machine: int = EM_X86_64, elf_class: int = 64,
                   notes: Iterable[bytes] = (), prstatus: Optional[Dict[str, int]] = None,
                   vaddrs: Optional[Sequence[int]] = None, align: int = 8,
                   pn_xnum: bool = False, e_type: int = ET_CORE,
                   with_kernel_gs_base: bool = True) -> bytes:
    """An ELF core: one PT_NOTE (if any note) then one PT_LOAD per run, in order.

    Args:
        runs: (paddr, data) or (paddr, data, memsz); p_vaddr = paddr unless
            ``vaddrs`` says otherwise.
        qemu_state: a dict from :func:`qemu_cpu_state` for a "QEMU" note.
        machine: e_machine (62 x86-64, 3 i386).
        elf_class: 64 or 32.
        notes: extra raw notes (from :func:`build_note`), after the QEMU one.
        prstatus: registers for a CORE/NT_PRSTATUS note (x86-64 layout).
        align: file alignment of each segment's data.
        pn_xnum: write e_phnum = 0xffff and the count in section header 0.
    """
    note_blob = b""
    if prstatus is not None:
        note_blob += build_note("CORE", NT_PRSTATUS, prstatus_x86_64(prstatus))
    if qemu_state is not None:
        note_blob += build_note("QEMU", 0, pack_qemu_state(qemu_state, with_kernel_gs_base))
    for note in notes:
        note_blob += note
    ehdr_size, phdr_size, shdr_size = (64, 56, 64) if elf_class == 64 else (52, 32, 40)
    phnum = len(runs) + (1 if note_blob else 0)
    phoff = ehdr_size
    shoff = phoff + phnum * phdr_size if pn_xnum else 0
    cursor = phoff + phnum * phdr_size + (shdr_size if pn_xnum else 0)

    def place(length: int) -> int:
        nonlocal cursor
        cursor += -cursor % align
        at = cursor
        cursor += length
        return at

    phdrs, blobs = [], []
    if note_blob:
        at = place(len(note_blob))
        phdrs.append(_phdr(elf_class, PT_NOTE, at, 0, 0, len(note_blob), 0))
        blobs.append((at, note_blob))
    for i, run in enumerate(runs):
        paddr, data = run[0], run[1]
        memsz = run[2] if len(run) > 2 else len(data)   # type: ignore[misc]
        at = place(len(data))
        vaddr = paddr if vaddrs is None else vaddrs[i]
        phdrs.append(_phdr(elf_class, PT_LOAD, at, vaddr, paddr, len(data), memsz))
        blobs.append((at, data))

    image = bytearray(cursor)
    image[0:ehdr_size] = _ehdr(elf_class, machine, phoff, 0xFFFF if pn_xnum else phnum,
                               shoff, 1 if pn_xnum else 0, e_type)
    for i, ph in enumerate(phdrs):
        image[phoff + i * phdr_size:phoff + (i + 1) * phdr_size] = ph
    if pn_xnum:
        info_at = 44 if elf_class == 64 else 28
        struct.pack_into("<I", image, shoff + info_at, phnum)
    for at, data in blobs:
        image[at:at + len(data)] = data
    return bytes(image)


def elf_offsets(core: bytes) -> dict:
    """Where things are in an ELF64 core built here: e_phoff, e_phnum and each
    program header's (offset of the header, p_type, p_offset, p_filesz) -- for
    tests that corrupt one field."""
    phoff, = struct.unpack_from("<Q", core, 32)
    phnum, = struct.unpack_from("<H", core, 56)
    headers = []
    for i in range(phnum):
        at = phoff + i * 56
        p_type, _f, p_offset, _v, _p, p_filesz = struct.unpack_from("<IIQQQQ", core, at)
        headers.append({"at": at, "type": p_type, "offset": p_offset, "filesz": p_filesz})
    return {"phoff": phoff, "phnum": phnum, "headers": headers}
