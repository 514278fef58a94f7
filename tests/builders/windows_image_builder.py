"""Build Windows process memory from the layout JSON files, for tests.

Independent of ksinspect.windows: the builder reads the layout files with
``json`` and packs members with ``struct`` from their offsets and type
names (the files' provenance is Microsoft's PDBs, see
ksinspect/windows/layouts/README.md), so a decoder bug cannot cancel out a
builder bug. It records what it planted; tests compare the decoders' output
with that record.

* :class:`VirtualMemory` - sparse linear memory of 4 KiB pages with
  ``read(address, size)`` raising ``InvalidAddressError`` for unmapped bytes
  (what the decoders need), and ``to_image()`` which places the pages behind
  real page tables (tests/builders/pagetable_builder.py) for AddressSpace / CLI tests.
* ``put(layout, struct, address, values)`` writes a structure's members;
  ``values`` nests for embedded structures (``{"ActiveProcessLinks":
  {"Flink": x}}``) and takes lists for arrays.
* :func:`build_process` plants a PEB, its process parameters, strings,
  environment and three loader lists (native x86/x64, or WoW64 with the
  x64 file's ``_PEB32`` and the x86 file's loader structures).
"""
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ksinspect.errors import InvalidAddressError

from builders.pagetable_builder import PageTableBuilder

PAGE = 4096
LAYOUT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "ksinspect", "windows", "layouts")
_PACK = {"uint8": "<B", "int8": "<b", "uint16": "<H", "int16": "<h", "uint32": "<I",
         "int32": "<i", "uint64": "<Q", "int64": "<q"}


def layout_json(name: str) -> dict:
    """A shipped layout file, read as plain JSON."""
    with open(os.path.join(LAYOUT_DIR, name + ".json"), encoding="utf-8") as fh:
        return json.load(fh)


def offset(layout: dict, struct_name: str, member: str) -> int:
    return layout["structs"][struct_name]["fields"][member]["offset"]


def sizeof(layout: dict, type_name: str) -> int:
    if type_name in _PACK:
        return struct.calcsize(_PACK[type_name])
    if type_name == "pointer":
        return layout["pointer_size"]
    if type_name.endswith("]"):
        element, count = type_name[:-1].rsplit("[", 1)
        return (1 if element == "char" else sizeof(layout, element)) * int(count)
    return layout["structs"][type_name]["size"]


class VirtualMemory:
    """Sparse linear memory: only mapped pages are readable."""

    def __init__(self):
        self.pages: Dict[int, bytearray] = {}

    def map(self, address: int, size: int) -> None:
        first = address & ~(PAGE - 1)
        for page in range(first, address + size, PAGE):
            self.pages.setdefault(page, bytearray(PAGE))

    def unmap(self, address: int) -> None:
        self.pages.pop(address & ~(PAGE - 1), None)

    def write(self, address: int, data: bytes) -> None:
        self.map(address, max(len(data), 1))
        done = 0
        while done < len(data):
            at = address + done
            page, start = at & ~(PAGE - 1), at % PAGE
            n = min(PAGE - start, len(data) - done)
            self.pages[page][start:start + n] = data[done:done + n]
            done += n

    def read(self, address: int, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            at = address + len(out)
            page, start = at & ~(PAGE - 1), at % PAGE
            if page not in self.pages:
                raise InvalidAddressError("%#x is not mapped" % at, address=at)
            n = min(PAGE - start, size - len(out))
            out += self.pages[page][start:start + n]
        return bytes(out)

    def to_image(self, mode: str, phys_base: int = 0x100000):
        """(PhysicalMemory, cr3, builder): the pages behind page tables of ``mode``."""
        builder = PageTableBuilder(mode)
        pa = phys_base
        for va in sorted(self.pages):
            builder.map(va, pa, writable=True, user=True)
            builder.write_phys(pa, bytes(self.pages[va]))
            pa += PAGE
        return builder.memory(), builder.cr3, builder


def pack_value(layout: dict, type_name: str, value) -> bytes:
    if type_name == "pointer":
        return value.to_bytes(layout["pointer_size"], "little")
    if type_name.startswith("char["):
        size = sizeof(layout, type_name)
        return bytes(value)[:size].ljust(size, b"\0")
    return struct.pack(_PACK[type_name], value)


def put(memory: VirtualMemory, layout: dict, struct_name: str, address: int,
        values: dict) -> None:
    """Write members of ``struct_name`` at ``address`` from the layout file."""
    fields = layout["structs"][struct_name]["fields"]
    for member, value in values.items():
        spec = fields[member]
        at = address + spec["offset"]
        type_name = spec["type"]
        if isinstance(value, dict):
            put(memory, layout, type_name, at, value)
        elif isinstance(value, list):
            element, _ = type_name[:-1].rsplit("[", 1)
            step = sizeof(layout, element)
            for i, item in enumerate(value):
                memory.write(at + i * step, pack_value(layout, element, item))
        elif "bit_length" in spec:
            width = sizeof(layout, type_name)
            current = int.from_bytes(memory.read(at, width), "little")
            mask = ((1 << spec["bit_length"]) - 1) << spec["bit_position"]
            current = (current & ~mask) | ((value << spec["bit_position"]) & mask)
            memory.write(at, current.to_bytes(width, "little"))
        else:
            memory.write(at, pack_value(layout, type_name, value))


class Heap:
    """A bump allocator in a mapped region."""

    def __init__(self, memory: VirtualMemory, base: int, size: int = 0x40000):
        self.memory, self.base, self.next, self.end = memory, base, base, base + size
        memory.map(base, size)

    def alloc(self, size: int, align: int = 16) -> int:
        self.next = (self.next + align - 1) & ~(align - 1)
        address = self.next
        self.next += size
        if self.next > self.end:
            raise ValueError("test heap full")
        return address

    def utf16(self, text: str, terminate: bool = True) -> Tuple[int, int]:
        data = text.encode("utf-16-le") + (b"\0\0" if terminate else b"")
        address = self.alloc(len(data))
        self.memory.write(address, data)
        return address, len(text.encode("utf-16-le"))


def counted(buffer: int, length: int, maximum: Optional[int] = None) -> dict:
    return {"Length": length, "MaximumLength": length + 2 if maximum is None else maximum,
            "Buffer": buffer}


@dataclass
class PlantedModule:
    entry: int
    base: int
    size: int
    entry_point: int
    name: str
    path: str


@dataclass
class PlantedProcess:
    """What build_process wrote: the expected answers."""

    memory: VirtualMemory
    peb: int
    ldr: int
    params: int
    image_base: int
    image_path: str
    command_line: str
    current_directory: str
    environment: List[str]
    being_debugged: bool
    modules: List[PlantedModule]
    heads: Dict[str, int] = field(default_factory=dict)     # list name -> head address
    link_offsets: Dict[str, int] = field(default_factory=dict)


LISTS = (("load", "InLoadOrderModuleList", "InLoadOrderLinks"),
         ("memory", "InMemoryOrderModuleList", "InMemoryOrderLinks"),
         ("init", "InInitializationOrderModuleList", "InInitializationOrderLinks"))

DEFAULT_MODULES = (("app.exe", "C:\\Program Files\\App\\app.exe"),
                   ("ntdll.dll", "C:\\Windows\\System32\\ntdll.dll"),
                   ("kernel32.dll", "C:\\Windows\\System32\\kernel32.dll"),
                   ("KERNELBASE.dll", "C:\\Windows\\System32\\KERNELBASE.dll"))


def build_process(peb_layout: str, loader_layout: Optional[str] = None, wow64: bool = False,
                  memory: Optional[VirtualMemory] = None, peb: Optional[int] = None,
                  heap_base: Optional[int] = None,
                  modules: Sequence[Tuple[str, str]] = DEFAULT_MODULES,
                  command_line: str = '"C:\\Program Files\\App\\app.exe" --flag \u00e9t\u00e9',
                  current_directory: str = "C:\\Users\\student\\",
                  environment: Sequence[str] = ("PATH=C:\\Windows", "TEMP=C:\\Temp",
                                                "=C:=C:\\Users"),
                  being_debugged: bool = True,
                  unlink: Dict[str, Sequence[int]] = None) -> PlantedProcess:
    """Plant a process environment in (new) memory.

    Args:
        peb_layout: layout file for the PEB (an x64 file with ``wow64`` uses its _PEB32).
        loader_layout: layout file for the loader structures and process
            parameters (default: ``peb_layout``; for WoW64 the x86 file).
        unlink: per list name (load/memory/init), module indices left out of that list.
    """
    pl = layout_json(peb_layout)
    ll = layout_json(loader_layout or peb_layout)
    memory = memory or VirtualMemory()
    narrow = wow64 or pl["pointer_size"] == 4
    peb_struct = "_PEB32" if wow64 else "_PEB"
    if peb is None:
        peb = 0x7EFDE000 if narrow else 0x7FF7FFFD3000
    heap = Heap(memory, heap_base or (0x00500000 if narrow else 0x1F5D0A40000))
    memory.map(peb, pl["structs"][peb_struct]["size"])
    unlink = unlink or {}

    # Process parameters and their strings.
    params = heap.alloc(ll["structs"]["_RTL_USER_PROCESS_PARAMETERS"]["size"])
    image_path = modules[0][1]
    ip_buf, ip_len = heap.utf16(image_path)
    cl_buf, cl_len = heap.utf16(command_line)
    cd_buf, cd_len = heap.utf16(current_directory)
    block = "".join(s + "\0" for s in environment) + "\0"
    env_bytes = block.encode("utf-16-le")
    env = heap.alloc(len(env_bytes))
    memory.write(env, env_bytes)
    param_values = {"Flags": 1, "ImagePathName": counted(ip_buf, ip_len),
                    "CommandLine": counted(cl_buf, cl_len),
                    "CurrentDirectory": {"DosPath": counted(cd_buf, cd_len, 520)},
                    "Environment": env}
    if "EnvironmentSize" in ll["structs"]["_RTL_USER_PROCESS_PARAMETERS"]["fields"]:
        param_values["EnvironmentSize"] = len(env_bytes)
    put(memory, ll, "_RTL_USER_PROCESS_PARAMETERS", params, param_values)

    # Loader data and entries.
    ldr = heap.alloc(ll["structs"]["_PEB_LDR_DATA"]["size"])
    put(memory, ll, "_PEB_LDR_DATA", ldr, {"Length": ll["structs"]["_PEB_LDR_DATA"]["size"],
                                           "Initialized": 1})
    entry_size = ll["structs"]["_LDR_DATA_TABLE_ENTRY"]["size"]
    planted: List[PlantedModule] = []
    base = 0x00400000 if narrow else 0x7FF6A0000000
    for i, (name, path) in enumerate(modules):
        entry = heap.alloc(entry_size)
        n_buf, n_len = heap.utf16(name)
        p_buf, p_len = heap.utf16(path)
        module_base = base if i == 0 else (0x77000000 - i * 0x200000 if narrow
                                           else 0x7FFE00000000 - i * 0x1000000)
        size = 0x1000 * (0x20 + 7 * i)
        values = {"DllBase": module_base, "SizeOfImage": size,
                  "FullDllName": counted(p_buf, p_len), "BaseDllName": counted(n_buf, n_len)}
        has_ep = "EntryPoint" in ll["structs"]["_LDR_DATA_TABLE_ENTRY"]["fields"]
        if has_ep:
            values["EntryPoint"] = module_base + 0x1230 + i
        put(memory, ll, "_LDR_DATA_TABLE_ENTRY", entry, values)
        planted.append(PlantedModule(entry, module_base, size,
                                     module_base + 0x1230 + i if has_ep else None, name, path))
    process = PlantedProcess(memory, peb, ldr, params, planted[0].base, image_path, command_line,
                             current_directory, list(environment), being_debugged, planted)
    for short, head_member, link_member in LISTS:
        head = ldr + offset(ll, "_PEB_LDR_DATA", head_member)
        link = offset(ll, "_LDR_DATA_TABLE_ENTRY", link_member)
        process.heads[short] = head
        process.link_offsets[short] = link
        members = [m for i, m in enumerate(planted) if i not in unlink.get(short, ())]
        if short == "init":
            members = [m for m in members if m is not planted[0]]   # the exe is not initialised
        link_list(memory, ll, head, [m.entry + link for m in members])

    put(memory, pl, peb_struct, peb, {"BeingDebugged": int(being_debugged),
                                      "ImageBaseAddress": planted[0].base,
                                      "Ldr": ldr, "ProcessParameters": params})
    return process


def link_list(memory: VirtualMemory, layout: dict, head: int, links: Sequence[int]) -> None:
    """Make a circular doubly linked list: head -> links... -> head."""
    chain = [head] + list(links)
    size = layout["pointer_size"]
    for i, node in enumerate(chain):
        flink = chain[(i + 1) % len(chain)]
        blink = chain[i - 1]
        memory.write(node, flink.to_bytes(size, "little") + blink.to_bytes(size, "little"))


def write_pointer(memory: VirtualMemory, address: int, value: int, size: int) -> None:
    memory.write(address, value.to_bytes(size, "little"))


def build_teb(memory: VirtualMemory, layout_name: str, teb: int, peb: int, pid: int, tid: int,
              wow64: bool = False, self_pointer: Optional[int] = None) -> None:
    """Plant a TEB (``_TEB32`` of an x64 file when ``wow64``)."""
    layout = layout_json(layout_name)
    name = "_TEB32" if wow64 else "_TEB"
    memory.map(teb, 2 * PAGE)
    put(memory, layout, name, teb, {
        "NtTib": {"Self": teb if self_pointer is None else self_pointer,
                  "StackBase": teb - 0x10000, "StackLimit": teb - 0x20000},
        "ClientId": {"UniqueProcess": pid, "UniqueThread": tid},
        "ProcessEnvironmentBlock": peb})
