"""Build memory images holding a Windows process list, for pslist / psscan tests.

Independent of ksinspect's Windows code: offsets come straight from the layout
JSON files (read here with ``json``; their provenance is in the layouts'
README), page tables from tests/builders/pagetable_builder.py (written from the Intel
SDM), and the kernel image is a PE built here from the PE/COFF specification
(Microsoft "PE Format": MS-DOS stub with e_lfanew at 0x3C, the "PE\\0\\0"
signature, the 20-byte COFF file header, the PE32 (0x10B, 224-byte) or PE32+
(0x20B, 240-byte) optional header with 16 data directories, 40-byte section
headers, and the 40-byte export directory table with its address, name
pointer and ordinal tables; names sorted for binary search).

What the builder plants is recorded in :class:`Planted` records: the expected
values of every test.

Typical use::

    b = EprocessImageBuilder("win7-sp1-7601.17514-x64")
    system = b.add_process("System", pid=4, ppid=0, kernel=True)
    b.add_process("smss.exe", pid=260, ppid=4, peb=PebPlan("\\\\SystemRoot\\\\...", ...))
    b.link()
    b.add_kernel_image()
    memory = b.memory()
"""
import json
import os
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from builders.pagetable_builder import PAGE, PageTableBuilder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAYOUT_DIRS = (os.path.join(ROOT, "ksinspect", "windows", "layouts"),)

# Where the builder puts things (typical of the release: x64 pool and system
# image space, x86 kernel half above 0x80000000).
KERNEL_IMAGE_VA = {"x64": 0xFFFFF80002A00000, "x86": 0x82A00000}
POOL_VA = {"x64": 0xFFFFFA8000C00000, "x86": 0x85000000}
USER_VA = {"x64": 0x000007FFFFFD0000, "x86": 0x7FFD0000}
WOW64_PEB32_VA = 0x7EFDE000
WOW64_USER_VA = 0x7EF00000    # the 32-bit structures of a WoW64 process (below 4 GiB)
DATA_PA = 0x01000000          # data pages start here; page tables grow from 0x1000
PROCESS_OBJECT = 3            # KOBJECTS ProcessObject (WRK ke.h)


def find_layout(name: str) -> str:
    for folder in LAYOUT_DIRS:
        path = os.path.join(folder, name if name.endswith(".json") else name + ".json")
        if os.path.exists(path):
            return path
    raise FileNotFoundError(name)


class RawLayout:
    """Offsets and types read from one layout JSON file, nothing else."""

    def __init__(self, name: str):
        with open(find_layout(name), encoding="utf-8") as fh:
            self.data = json.load(fh)
        self.name = os.path.basename(find_layout(name))[:-5]
        self.arch = self.data["arch"]
        self.ptr = self.data["pointer_size"]
        self.structs = self.data["structs"]
        self.nt_version = tuple(int(x) for x in self.data["nt_version"].split(" ")[0]
                                .split(".")[:3])

    def has(self, struct_name: str, name: str) -> bool:
        return name in self.structs.get(struct_name, {}).get("fields", {})

    def off(self, struct_name: str, name: str) -> int:
        return self.structs[struct_name]["fields"][name]["offset"]

    def type(self, struct_name: str, name: str) -> str:
        return self.structs[struct_name]["fields"][name]["type"]

    def size(self, struct_name: str) -> int:
        return self.structs[struct_name]["size"]

    def width(self, type_name: str) -> int:
        base = type_name.split("[")[0]
        return {"uint8": 1, "int8": 1, "uint16": 2, "int16": 2, "uint32": 4, "int32": 4,
                "uint64": 8, "int64": 8, "pointer": self.ptr, "_LARGE_INTEGER": 8,
                "_EX_FAST_REF": self.ptr}[base]

    def put(self, buf: bytearray, at: int, struct_name: str, name: str, value) -> None:
        """Write one field of struct_name (whose first byte is buf[at])."""
        t = self.type(struct_name, name)
        o = at + self.off(struct_name, name)
        if t.startswith("char["):
            n = int(t[5:-1])
            raw = value.encode("latin-1")[:n]
            buf[o:o + n] = raw + bytes(n - len(raw))
        elif t == "_LIST_ENTRY":
            self.put(buf, o, "_LIST_ENTRY", "Flink", value[0])
            self.put(buf, o, "_LIST_ENTRY", "Blink", value[1])
        elif t in ("_UNICODE_STRING",):
            self.put(buf, o, t, "Length", value[0])
            self.put(buf, o, t, "MaximumLength", value[1])
            self.put(buf, o, t, "Buffer", value[2])
        elif t == "_KPROCESS" or t == "_DISPATCHER_HEADER":
            raise ValueError("write the members of %s" % t)
        else:
            w = self.width(t)
            buf[o:o + w] = (value & ((1 << (8 * w)) - 1)).to_bytes(w, "little")


@dataclass
class Module:
    base: int
    size: int
    entry_point: int
    name: str
    path: str


@dataclass
class PebPlan:
    image_path: str
    command_line: str
    current_directory: str = "C:\\Windows\\system32\\"
    modules: Sequence[Module] = ()
    image_base: int = 0x400000


@dataclass
class Planted:
    """One process the builder placed: the expected values."""

    name: str
    pid: int
    ppid: int
    eprocess: int             # kernel VA
    eprocess_pa: int
    dtb: int
    peb: int                  # 0 when none
    create_time: int          # FILETIME
    exit_time: int
    wow64_pointer: int = 0    # the EPROCESS field's value
    peb32: int = 0            # the 32-bit PEB it leads to
    peb_plan: Optional[PebPlan] = None
    linked: bool = True


class EprocessImageBuilder:
    """A physical memory with a kernel address space, processes and their PEBs.

    Args:
        layout: a layout file name (``win7-sp1-7601.17514-x64``).
        paging: "4level" for x64; "pae" or "32" for x86.
        align: alignment of each EPROCESS (pool blocks: 16 on x64, 8 on x86).
    """

    def __init__(self, layout: str, paging: Optional[str] = None, align: Optional[int] = None):
        self.L = RawLayout(layout)
        self.arch = self.L.arch
        self.paging = paging or ("4level" if self.arch == "x64" else "pae")
        self.align = align or (16 if self.arch == "x64" else 8)
        self.kernel = PageTableBuilder(self.paging, table_base=0x1000, nxe=self.paging != "32")
        self.pages = self.kernel.pages
        self.processes: List[Planted] = []
        self.spaces: Dict[int, PageTableBuilder] = {}
        self._data_next = DATA_PA
        self._pool_next = POOL_VA[self.arch]
        self._user_next: Dict[int, int] = {}
        self.list_head_va: Optional[int] = None
        self.list_head_pa: Optional[int] = None
        self.kernel_base: Optional[int] = None
        self.pe_file: Optional[bytes] = None
        self.system_pointer_va: Optional[int] = None
        self._head_storage: Optional[Tuple[int, int]] = None
        self._region = "native"

    # -- memory ------------------------------------------------------------------------------

    def _new_pages(self, count: int) -> int:
        pa = self._data_next
        for i in range(count):
            self.pages[pa + i * PAGE] = bytearray(PAGE)
        self._data_next += count * PAGE
        return pa

    def write_pa(self, pa: int, data: bytes) -> None:
        self.kernel.write_phys(pa, data)

    def read_pa(self, pa: int, n: int) -> bytes:
        out = bytearray()
        for i in range(n):
            page = (pa + i) & ~(PAGE - 1)
            out.append(self.pages[page][(pa + i) - page])
        return bytes(out)

    def kalloc(self, size: int, align: int = 16) -> Tuple[int, int]:
        """Kernel pool memory: (va, pa), virtually and physically contiguous."""
        va = (self._pool_next + align - 1) & ~(align - 1)
        end = va + size
        mapped = self.kernel.expected(va & ~(PAGE - 1))
        if mapped is not None and (end - 1) & ~(PAGE - 1) != va & ~(PAGE - 1) \
                and mapped.pa + PAGE != self._data_next:
            # The next physical page went elsewhere: start on a fresh page.
            va = (va + PAGE - 1) & ~(PAGE - 1)
            end = va + size
        first_page = va & ~(PAGE - 1)
        page_va = first_page
        while page_va < end:
            if self.kernel.expected(page_va) is None:
                pa = self._new_pages(1)
                self.kernel.map(page_va, pa, writable=True, user=False,
                                nx=self.paging != "32")
            page_va += PAGE
        self._pool_next = end
        pa = self.kernel.expected(va).pa_of(va)
        # Keep physical contiguity: every page just mapped follows the previous one.
        assert self.kernel.expected(end - 1).pa_of(end - 1) == pa + size - 1
        return va, pa

    def space_for(self, dtb: int) -> PageTableBuilder:
        return self.spaces[dtb]

    def new_space(self) -> PageTableBuilder:
        space = PageTableBuilder(self.paging, table_base=0x1000, nxe=self.paging != "32")
        root_pages = space.pages
        space.pages = self.pages
        for pa, data in root_pages.items():
            # The root page was allocated in the builder's own dict: move it
            # to a free page of the shared memory.
            while pa in self.pages:
                pa += PAGE
            self.pages[pa] = data
            space.tables = {pa: space.info["levels"][0][0]}
            space.root = space.cr3 = pa
        self.spaces[space.cr3] = space
        return space

    def ualloc(self, space: PageTableBuilder, size: int, start: Optional[int] = None
               ) -> Tuple[int, int]:
        """User memory in one process's space: (va, pa), contiguous."""
        key = (space.cr3, self._region)
        first = USER_VA[self.arch] if self._region == "native" else WOW64_USER_VA
        va = start if start is not None else self._user_next.get(key, first)
        va = (va + PAGE - 1) & ~(PAGE - 1)      # each allocation gets its own pages
        pages = (((va + size + PAGE - 1) & ~(PAGE - 1)) - (va & ~(PAGE - 1))) // PAGE
        pa = self._new_pages(pages)
        for i in range(pages):
            space.map((va & ~(PAGE - 1)) + i * PAGE, pa + i * PAGE, writable=True, user=True,
                      nx=self.paging != "32")
        if start is None:
            self._user_next[key] = va + size
        return va, pa + (va & (PAGE - 1))

    def uwrite(self, space: PageTableBuilder, data: bytes) -> int:
        va, pa = self.ualloc(space, len(data))
        self.write_pa(pa, data)
        return va

    # -- processes ---------------------------------------------------------------------------

    def add_process(self, name: str, pid: int, ppid: int, create_time: int = 0,
                    exit_time: int = 0, kernel: bool = False, peb: Optional[PebPlan] = None,
                    wow64: Optional[PebPlan] = None, size_byte: Optional[int] = None,
                    ) -> Planted:
        L = self.L
        size = L.size("_EPROCESS")
        va, pa = self.kalloc(size, self.align)
        space = self.kernel if kernel else self.new_space()
        if kernel:
            self.spaces[self.kernel.cr3] = self.kernel
        dtb = space.cr3
        buf = bytearray(size)
        header = L.off("_KPROCESS", "Header")
        buf[header + L.off("_DISPATCHER_HEADER", "Type")] = PROCESS_OBJECT
        kprocess_size = L.size("_KPROCESS")
        # WRK KeInitializeProcess: Header.Size = sizeof(KPROCESS) / sizeof(LONG).
        buf[header + L.off("_DISPATCHER_HEADER", "Size")] = (
            size_byte if size_byte is not None else (kprocess_size // 4) & 0xFF)
        wait = header + L.off("_DISPATCHER_HEADER", "WaitListHead")
        L.put(buf, wait, "_LIST_ENTRY", "Flink", va + wait)
        L.put(buf, wait, "_LIST_ENTRY", "Blink", va + wait)
        L.put(buf, 0, "_KPROCESS", "DirectoryTableBase", dtb)
        L.put(buf, 0, "_EPROCESS", "UniqueProcessId", pid)
        L.put(buf, 0, "_EPROCESS", "InheritedFromUniqueProcessId", ppid)
        L.put(buf, 0, "_EPROCESS", "ImageFileName", name)
        L.put(buf, 0, "_EPROCESS", "CreateTime", create_time)
        L.put(buf, 0, "_EPROCESS", "ExitTime", exit_time)
        for owner in ("_KPROCESS", "_EPROCESS"):
            at = L.off(owner, "ThreadListHead")
            L.put(buf, 0, owner, "ThreadListHead", (va + at, va + at))   # no threads
        links = L.off("_EPROCESS", "ActiveProcessLinks")
        L.put(buf, 0, "_EPROCESS", "ActiveProcessLinks", (va + links, va + links))
        planted = Planted(name, pid, ppid, va, pa, dtb, 0, create_time, exit_time,
                          peb_plan=peb)
        if peb is not None:
            planted.peb = self._plant_peb(space, peb)
            L.put(buf, 0, "_EPROCESS", "Peb", planted.peb)
        if wow64 is not None:
            planted.peb32, planted.wow64_pointer = self._plant_wow64(space, wow64)
            field_name = "WoW64Process" if L.has("_EPROCESS", "WoW64Process") else "Wow64Process"
            L.put(buf, 0, "_EPROCESS", field_name, planted.wow64_pointer)
        self.write_pa(pa, bytes(buf))
        self.processes.append(planted)
        return planted

    def _unicode(self, space: PageTableBuilder, text: str) -> Tuple[int, int, int]:
        raw = text.encode("utf-16-le")
        buffer = self.uwrite(space, raw + b"\0\0")
        return len(raw), len(raw) + 2, buffer

    def _plant_peb(self, space: PageTableBuilder, plan: PebPlan, loader: Optional[RawLayout] = None,
                   peb_struct: str = "_PEB", peb_at: Optional[int] = None) -> int:
        """A PEB (``peb_struct`` of this layout) with its process parameters,
        environment and loader lists (``loader``'s structures: the x86 twin
        for a WoW64 32-bit PEB)."""
        P = self.L
        L = loader or self.L
        fmt = "<QQ" if L.ptr == 8 else "<II"
        peb_va, peb_pa = self.ualloc(space, P.size(peb_struct), start=peb_at)
        peb = bytearray(P.size(peb_struct))
        P.put(peb, 0, peb_struct, "ImageBaseAddress", plan.image_base)
        # Process parameters (normalised: absolute pointers).
        pp_size = L.size("_RTL_USER_PROCESS_PARAMETERS")
        pp_va, pp_pa = self.ualloc(space, pp_size)
        pp = bytearray(pp_size)
        L.put(pp, 0, "_RTL_USER_PROCESS_PARAMETERS", "MaximumLength", pp_size)
        L.put(pp, 0, "_RTL_USER_PROCESS_PARAMETERS", "Length", pp_size)
        L.put(pp, 0, "_RTL_USER_PROCESS_PARAMETERS", "Flags", 1)   # RTL_USER_PROC_PARAMS_NORMALIZED
        L.put(pp, 0, "_RTL_USER_PROCESS_PARAMETERS", "ImagePathName",
              self._unicode(space, plan.image_path))
        L.put(pp, 0, "_RTL_USER_PROCESS_PARAMETERS", "CommandLine",
              self._unicode(space, plan.command_line))
        curdir = L.off("_RTL_USER_PROCESS_PARAMETERS", "CurrentDirectory")
        L.put(pp, curdir, "_CURDIR", "DosPath", self._unicode(space, plan.current_directory))
        environment = "PATH=C:\\Windows\0SystemRoot=C:\\Windows\0\0".encode("utf-16-le")
        L.put(pp, 0, "_RTL_USER_PROCESS_PARAMETERS", "Environment",
              self.uwrite(space, environment))
        if L.has("_RTL_USER_PROCESS_PARAMETERS", "EnvironmentSize"):
            L.put(pp, 0, "_RTL_USER_PROCESS_PARAMETERS", "EnvironmentSize", len(environment))
        self.write_pa(pp_pa, bytes(pp))
        P.put(peb, 0, peb_struct, "ProcessParameters", pp_va)
        # Loader data with the three module lists, in the same order.
        ldr_size = L.size("_PEB_LDR_DATA")
        ldr_va, ldr_pa = self.ualloc(space, ldr_size)
        ldr = bytearray(ldr_size)
        L.put(ldr, 0, "_PEB_LDR_DATA", "Length", ldr_size)
        L.put(ldr, 0, "_PEB_LDR_DATA", "Initialized", 1)
        entry_size = L.size("_LDR_DATA_TABLE_ENTRY")
        entries = [self.ualloc(space, entry_size) for _ in plan.modules]
        links: List[Tuple[int, int, int]] = []
        for kind in ("InLoadOrder", "InMemoryOrder", "InInitializationOrder"):
            head_off = L.off("_PEB_LDR_DATA", kind + "ModuleList")
            link_off = L.off("_LDR_DATA_TABLE_ENTRY", kind + "Links")
            nodes = [ldr_va + head_off] + [va + link_off for va, _ in entries]
            for i in range(len(nodes)):
                flink, blink = nodes[(i + 1) % len(nodes)], nodes[i - 1]
                if i == 0:
                    L.put(ldr, 0, "_PEB_LDR_DATA", kind + "ModuleList", (flink, blink))
                else:
                    links.append((entries[i - 1][1] + link_off, flink, blink))
        for (va, pa), module in zip(entries, plan.modules):
            e = bytearray(entry_size)
            L.put(e, 0, "_LDR_DATA_TABLE_ENTRY", "DllBase", module.base)
            L.put(e, 0, "_LDR_DATA_TABLE_ENTRY", "EntryPoint", module.entry_point)
            L.put(e, 0, "_LDR_DATA_TABLE_ENTRY", "SizeOfImage", module.size)
            L.put(e, 0, "_LDR_DATA_TABLE_ENTRY", "FullDllName", self._unicode(space, module.path))
            L.put(e, 0, "_LDR_DATA_TABLE_ENTRY", "BaseDllName", self._unicode(space, module.name))
            self.write_pa(pa, bytes(e))
        for pa, flink, blink in links:
            self.write_pa(pa, struct.pack(fmt, flink, blink))
        self.write_pa(ldr_pa, bytes(ldr))
        P.put(peb, 0, peb_struct, "Ldr", ldr_va)
        self.write_pa(peb_pa, bytes(peb))
        return peb_va

    def _plant_wow64(self, space: PageTableBuilder, plan: PebPlan) -> Tuple[int, int]:
        """A 32-bit PEB (``_PEB32`` of the x64 layout) at the usual WoW64
        address, and what the EPROCESS field points to, per release:
        ``_WOW64_PROCESS`` {Wow64 = PEB32} (5.2, 6.0), the PEB32 itself (6.1 to
        10.0.10240), ``_EWOW64PROCESS`` {Peb = PEB32} (10.0.10586 and later)."""
        L = self.L
        try:
            twin = RawLayout(L.name[:-len("-x64")] + "-x86")
        except FileNotFoundError:
            # Windows 11 has no x86 release: its WoW64 loader structures are
            # those of the last x86 release (the loader's user-mode layout).
            twin = RawLayout("win10-22h2-19045.2965-x86")
        self._region = "wow64"
        try:
            peb32_va = self._plant_peb(space, plan, twin, "_PEB32", WOW64_PEB32_VA)
        finally:
            self._region = "native"
        if L.has("_EPROCESS", "WoW64Process"):
            va, pa = self.kalloc(L.size("_EWOW64PROCESS"))
            block = bytearray(L.size("_EWOW64PROCESS"))
            L.put(block, 0, "_EWOW64PROCESS", "Peb", peb32_va)
            if L.has("_EWOW64PROCESS", "Machine"):
                L.put(block, 0, "_EWOW64PROCESS", "Machine", 0x14C)   # IMAGE_FILE_MACHINE_I386
            self.write_pa(pa, bytes(block))
            return peb32_va, va
        if self.L.nt_version < (6, 1, 0):
            va, pa = self.kalloc(8)
            self.write_pa(pa, struct.pack("<Q", peb32_va))
            return peb32_va, va
        return peb32_va, peb32_va

    # -- the list ----------------------------------------------------------------------------

    def _links_va(self, p: Planted) -> int:
        return p.eprocess + self.L.off("_EPROCESS", "ActiveProcessLinks")

    def _write_links(self, node_pa: int, flink: int, blink: int) -> None:
        fmt = "<QQ" if self.L.ptr == 8 else "<II"
        self.write_pa(node_pa, struct.pack(fmt, flink, blink))

    def _node_pa(self, node_va: int) -> int:
        if node_va == self.list_head_va:
            return self.list_head_pa
        for p in self.processes:
            if node_va == self._links_va(p):
                return p.eprocess_pa + self.L.off("_EPROCESS", "ActiveProcessLinks")
        raise KeyError(hex(node_va))

    def link(self, order: Optional[Sequence[Planted]] = None) -> None:
        """PsActiveProcessHead -> processes in order -> back to the head."""
        if self.list_head_va is None:
            self.list_head_va, self.list_head_pa = self._head_location()
        chain = [self.list_head_va] + [self._links_va(p) for p in (order or self.processes)]
        for i, node in enumerate(chain):
            self._write_links(self._node_pa(node), chain[(i + 1) % len(chain)], chain[i - 1])

    def _head_location(self) -> Tuple[int, int]:
        if self._head_storage is None:
            self._head_storage = self.kalloc(2 * self.L.ptr)
        return self._head_storage

    def set_flink(self, p: Planted, target_va: int) -> None:
        """Point p's ActiveProcessLinks.Flink somewhere (a loop, a break)."""
        pa = self._node_pa(self._links_va(p))
        fmt = "<Q" if self.L.ptr == 8 else "<I"
        self.write_pa(pa, struct.pack(fmt, target_va))

    def unlink(self, victim: Planted) -> None:
        """DKOM: the neighbours skip victim; its own links point to itself."""
        order = [p for p in self.processes if p.linked and p is not victim]
        victim.linked = False
        self.link(order)
        node = self._links_va(victim)
        self._write_links(self._node_pa(node), node, node)

    # -- the kernel image --------------------------------------------------------------------

    def add_kernel_image(self, system: Planted, dll_name: str = "ntoskrnl.exe",
                         base: Optional[int] = None) -> int:
        """A PE image exporting PsInitialSystemProcess (-> system's EPROCESS)
        and NtBuildNumber, mapped at base; PsActiveProcessHead lives in its
        .data section. Returns the base."""
        base = base if base is not None else KERNEL_IMAGE_VA[self.arch]
        build = self.L.nt_version[2] if len(self.L.nt_version) > 2 else 0
        pe_file, memory_image, rva = build_kernel_pe(
            self.arch, base, dll_name, {"PsInitialSystemProcess": system.eprocess,
                                        "NtBuildNumber": 0xF0000000 | build})
        pages = len(memory_image) // PAGE
        pa = self._new_pages(pages)
        for i in range(pages):
            self.kernel.map(base + i * PAGE, pa + i * PAGE, writable=False, user=False)
        self.write_pa(pa, memory_image)
        self.kernel_base = base
        self.pe_file = pe_file
        self.system_pointer_va = base + rva["PsInitialSystemProcess"]
        # The list head sits in the image's .data, as in the real kernel.
        self._head_storage = (base + rva["__head"], pa + rva["__head"])
        self.list_head_va, self.list_head_pa = self._head_storage
        return base

    # -- output ---------------------------------------------------------------------------------

    def memory(self):
        from ksinspect.memory import PhysicalMemory, Run
        buffer, runs = bytearray(), []
        for pa, data in self.kernel.runs():
            runs.append(Run(pa, len(data), len(buffer)))
            buffer.extend(data)
        return PhysicalMemory(bytes(buffer), runs, "raw", description="eprocess builder")

    def flat(self) -> bytes:
        return self.kernel.flat()

    @property
    def cr3(self) -> int:
        return self.kernel.cr3


def build_kernel_pe(arch: str, image_base: int, dll_name: str, exports: Dict[str, int]
                    ) -> Tuple[bytes, bytes, Dict[str, int]]:
    """A minimal kernel PE: (file bytes, the image as loaded, RVAs of the
    exported variables plus "__head", a 16-byte LIST_ENTRY slot in .data).

    Each export is a pointer-size variable in .data holding the given value.
    The file is laid out with FileAlignment 0x200 (the section's raw data at
    file offset 0x400) while the loaded image has it at RVA 0x1000, so a
    reader that confuses file offsets and RVAs fails.
    """
    is64 = arch == "x64"
    ptr = 8 if is64 else 4
    names = sorted(exports)
    data_rva = 0x1000
    sec = bytearray(0x1000)
    # Variables first, then the export directory and its tables.
    rva: Dict[str, int] = {}
    at = 0
    for name in names:
        rva[name] = data_rva + at
        sec[at:at + ptr] = exports[name].to_bytes(ptr, "little")
        at += 16
    rva["__head"] = data_rva + at
    at += 16
    edir = at
    at += 40
    functions = at
    at += 4 * len(names)
    name_ptrs = at
    at += 4 * len(names)
    ordinals = at
    at += 2 * len(names)
    dll_name_at = at
    sec[at:at + len(dll_name) + 1] = dll_name.encode() + b"\0"
    at += len(dll_name) + 1
    for i, name in enumerate(names):
        struct.pack_into("<I", sec, functions + 4 * i, rva[name])
        struct.pack_into("<I", sec, name_ptrs + 4 * i, data_rva + at)
        struct.pack_into("<H", sec, ordinals + 2 * i, i)
        sec[at:at + len(name) + 1] = name.encode() + b"\0"
        at += len(name) + 1
    struct.pack_into("<IIHHIIIIIII", sec, edir, 0, 0x5B6D7E01, 0, 0, data_rva + dll_name_at, 1,
                     len(names), len(names), data_rva + functions, data_rva + name_ptrs,
                     data_rva + ordinals)
    export_rva, export_size = data_rva + edir, at - edir

    headers = bytearray(0x400)
    headers[0:2] = b"MZ"
    struct.pack_into("<I", headers, 0x3C, 0x80)
    headers[0x80:0x84] = b"PE\0\0"
    opt_size = 240 if is64 else 224
    struct.pack_into("<HHIIIHH", headers, 0x84, 0x8664 if is64 else 0x14C, 1, 0x5B6D7E01, 0, 0,
                     opt_size, 0x0022)
    o = 0x98
    size_of_image = 0x2000
    if is64:
        struct.pack_into("<HBBIIIII", headers, o, 0x20B, 14, 0, 0, 0x1000, 0, 0x1000, 0x1000)
        struct.pack_into("<QIIHHHHHHIIIIHHQQQQII", headers, o + 24, image_base, 0x1000, 0x200,
                         10, 0, 10, 0, 10, 0, 0, size_of_image, 0x400, 0, 1, 0x160,
                         0x80000, 0x2000, 0x100000, 0x1000, 0, 16)
        dirs = o + 112
    else:
        struct.pack_into("<HBBIIIIII", headers, o, 0x10B, 14, 0, 0, 0x1000, 0, 0x1000, 0x1000,
                         0x1000)
        struct.pack_into("<IIIHHHHHHIIIIHHIIIIII", headers, o + 28, image_base, 0x1000, 0x200,
                         10, 0, 10, 0, 10, 0, 0, size_of_image, 0x400, 0, 1, 0x140,
                         0x80000, 0x2000, 0x100000, 0x1000, 0, 16)
        dirs = o + 96
    struct.pack_into("<II", headers, dirs, export_rva, export_size)
    section = o + opt_size
    struct.pack_into("<8sIIIIIIHHI", headers, section, b".data", 0x1000, data_rva, 0x1000,
                     0x400, 0, 0, 0, 0, 0xC8000040)
    pe_file = bytes(headers) + bytes(sec)
    memory_image = bytes(headers) + bytes(0x1000 - len(headers)) + bytes(sec)
    return pe_file, memory_image, rva


def filetime(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
             second: int = 0) -> int:
    """A FILETIME: 100-ns intervals since 1601-01-01 UTC (MS-DTYP 2.3.3)."""
    import datetime
    delta = datetime.datetime(year, month, day, hour, minute, second) - datetime.datetime(
        1601, 1, 1)
    return (delta.days * 86400 + delta.seconds) * 10_000_000


def standard_image(layout: str, paging: Optional[str] = None, kernel_image: bool = True,
                   wow64: bool = False) -> Tuple[EprocessImageBuilder, List[Planted]]:
    """System + four processes with PEBs (one WoW64 when asked and possible)."""
    b = EprocessImageBuilder(layout, paging)
    system = b.add_process("System", 4, 0, create_time=filetime(2024, 3, 1, 8, 0, 0),
                           kernel=True)
    if kernel_image:
        b.add_kernel_image(system)
    procs = [system]
    user = [("smss.exe", 268, 4), ("csrss.exe", 356, 348), ("explorer.exe", 1504, 1480),
            ("notepad.exe", 2216, 1504)]
    for i, (name, pid, ppid) in enumerate(user):
        path = "C:\\Windows\\System32\\" + name
        plan = PebPlan(path, '"%s" --planted %d' % (path, pid), modules=[
            Module(0x400000 + i * 0x10000, 0x2000 + i * 0x1000, 0x401000 + i * 0x10000, name,
                   path),
            Module(0x77000000, 0x1A9000, 0x77010000, "ntdll.dll",
                   "C:\\Windows\\SYSTEM32\\ntdll.dll")])
        is_wow = wow64 and name == "notepad.exe" and b.arch == "x64"
        procs.append(b.add_process(name, pid, ppid, create_time=filetime(2024, 3, 1, 8, 0, i + 1),
                                   peb=plan, wow64=plan if is_wow else None))
    if kernel_image:
        b.add_kernel_image(system)
    b.link()
    return b, procs


__all__ = ["EprocessImageBuilder", "Module", "PebPlan", "Planted", "RawLayout",
           "build_kernel_pe", "filetime", "standard_image"]
