"""The process environment: PEB, TEB, process parameters and the loader's module lists.

The decoders read through any ``memory`` with ``read(address, size) ->
bytes`` that raises :class:`~ksinspect.errors.InvalidAddressError` for
unreadable addresses: a :class:`ksinspect.paging.AddressSpace` over an image,
or a live process reader. Offsets come from the build's :class:`Layout`.

What the structures are (documented in winternl.h and the "PEB",
"PEB_LDR_DATA", "RTL_USER_PROCESS_PARAMETERS" pages of the Windows docs;
full layouts from the PDBs, see ``layouts/README.md``):

* ``_PEB.Ldr`` points to ``_PEB_LDR_DATA``, which heads three circular
  doubly linked lists of ``_LDR_DATA_TABLE_ENTRY``: in load order, in memory
  order, in initialisation order. Each list links a different
  ``_LIST_ENTRY`` member of the entry, so the entry starts at the link's
  address minus that member's offset (CONTAINING_RECORD).
* ``_PEB.ProcessParameters`` points to ``_RTL_USER_PROCESS_PARAMETERS``:
  ImagePathName, CommandLine, CurrentDirectory.DosPath (counted strings)
  and Environment (``NAME=value`` UTF-16 strings, each NUL-terminated, the
  block ending with an empty one).
* A WoW64 process (32-bit program on x64 Windows) also has a ``_PEB32``
  with 4-byte pointers, whose loader structures are the 32-bit ones.

A loader list in a dump can loop, break, or be unlinked on purpose (a
module hiding from one list): every walk is bounded, and what looks wrong
is a finding on the result, never an exception or a hang.
"""
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import DecodeError, InvalidAddressError, TruncatedDataError
from ..findings import Finding, finding_dicts
from ..views.columns import MODULE_COLUMNS
from ..views.html import html_pre
from ..views.text import spec_text
from ._api import address_and_layout, renamed_argument
from .checks import Check, CrossCheck  # noqa: F401  (Check: the old name, the same class)
from .layout import Layout
from .layout_files import available_layouts, load_layout
from .strings import UnicodeString, string_from_header
from .struct import Struct

MAX_MODULES = 4096           # entries per loader list before the walk stops
MAX_ENVIRONMENT = 1 << 20    # bytes of environment block read at most
PAGE = 0x1000
RTL_USER_PROC_PARAMS_NORMALIZED = 0x1   # Flags bit: string Buffers are addresses, not offsets

# Module.lists, in this order: InLoadOrder, InMemoryOrder, InInitializationOrder
LIST_NAMES = ("load", "memory", "init")
LISTS = (
    # (PEB_LDR_DATA head member, LDR_DATA_TABLE_ENTRY link member, short name)
    ("InLoadOrderModuleList", "InLoadOrderLinks", "load"),
    ("InMemoryOrderModuleList", "InMemoryOrderLinks", "memory"),
    ("InInitializationOrderModuleList", "InInitializationOrderLinks", "init"),
)


def _read(memory: Any, address: int, size: int) -> bytes:
    try:
        return memory.read(address, size)
    except DecodeError as exc:
        raise InvalidAddressError(str(exc), address=address) from None


def _struct_at(memory: Any, layout: Layout, name: str, address: int) -> Struct:
    """Read a whole structure (its size from the layout, else up to its last member)."""
    shape = layout.struct(name)
    size = shape.size
    if size is None:
        size = max((f.offset + (layout.type_info(f.type).size or 0)
                    for f in shape.fields.values()), default=0)
    return Struct(layout, name, _read(memory, address, size), address)


def _struct_prefix(memory: Any, layout: Layout, name: str, address: int,
                   fields: Sequence[str]) -> Struct:
    """Read a structure only up to the end of the members needed (a TEB spans pages)."""
    end = 0
    for member in fields:
        spec = layout.field(name, member)
        end = max(end, spec.offset + (layout.type_info(spec.type).size or 0))
    return Struct(layout, name, _read(memory, address, end), address)


@dataclass(frozen=True)
class Module:
    """One ``_LDR_DATA_TABLE_ENTRY``.

    Attributes:
        entry: the entry's address.
        base, size, entry_point: DllBase, SizeOfImage, EntryPoint.
        name, path: BaseDllName and FullDllName.
        lists: which loader lists hold it (``load``, ``memory``, ``init``:
            InLoadOrder, InMemoryOrder, InInitializationOrder).
    """

    entry: int
    base: int
    size: int
    entry_point: Optional[int]
    name: Optional[str]
    path: Optional[str]
    lists: Tuple[str, ...] = ()
    findings: Tuple[Finding, ...] = ()

    def to_dict(self) -> dict:
        return {"base": self.base, "size": self.size, "entry_point": self.entry_point,
                "name": self.name, "path": self.path,
                "lists": [name for name in LIST_NAMES if name in self.lists]}


@dataclass(frozen=True)
class ListWalk:
    """The entries one loader list reached, in order, and how the walk ended."""

    name: str
    head: int
    entries: Tuple[int, ...]
    findings: Tuple[Finding, ...]


@dataclass(frozen=True)
class ProcessParameters:
    """The strings of ``_RTL_USER_PROCESS_PARAMETERS``."""

    address: int
    image_path: UnicodeString
    command_line: UnicodeString
    current_directory: UnicodeString
    environment: Tuple[str, ...]
    environment_address: int
    normalized: bool
    findings: Tuple[Finding, ...]


@dataclass(frozen=True)
class Peb:
    """A decoded PEB with its process parameters and loader lists.

    ``to_dict()`` keys are fixed (the ``peb`` JSON interface): address,
    being_debugged, image_base, ldr, process_parameters, image_path,
    command_line, current_directory, environment, modules (each with the
    ``lists`` that hold it), checks, findings (``{code, message}``),
    structure, layout, loader_layout (the 32-bit loader structures' layout
    of a WoW64 PEB, else null), notes.
    """

    address: int
    layout: Layout
    struct_name: str
    being_debugged: bool
    image_base: int
    ldr: int
    process_parameters: int
    parameters: Optional[ProcessParameters]
    modules: Tuple[Module, ...]
    lists: Tuple[ListWalk, ...]
    findings: Tuple[Finding, ...]
    struct: Struct = field(repr=False, compare=False)
    loader_layout: Optional[Layout] = None
    checks: Tuple[CrossCheck, ...] = ()
    notes: Tuple[str, ...] = ()

    @property
    def wow64(self) -> bool:
        return self.struct_name == "_PEB32"

    @property
    def image_path(self) -> Optional[str]:
        return None if self.parameters is None else self.parameters.image_path.text

    @property
    def command_line(self) -> Optional[str]:
        return None if self.parameters is None else self.parameters.command_line.text

    @property
    def current_directory(self) -> Optional[str]:
        return None if self.parameters is None else self.parameters.current_directory.text

    @property
    def environment(self) -> Tuple[str, ...]:
        return () if self.parameters is None else self.parameters.environment

    def with_checks(self, checks: Sequence[CrossCheck]) -> "Peb":
        """A copy carrying cross-checks against independent sources."""
        return replace(self, checks=tuple(checks))

    def to_dict(self) -> dict:
        return {
            "address": self.address,
            "being_debugged": self.being_debugged,
            "image_base": self.image_base,
            "ldr": self.ldr,
            "process_parameters": self.process_parameters,
            "image_path": self.image_path,
            "command_line": self.command_line,
            "current_directory": self.current_directory,
            "environment": list(self.environment),
            "modules": [m.to_dict() for m in self.modules],
            "checks": [c.to_dict() for c in self.checks],
            "findings": finding_dicts(self.findings),
            "structure": self.struct_name,
            "layout": self.layout.name,
            "loader_layout": None if self.loader_layout is None else self.loader_layout.name,
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        return "%s at %#x: %s, %d modules, BeingDebugged %d%s" % (
            self.struct_name, self.address, self.image_path or "image path unknown",
            len(self.modules), self.being_debugged,
            ", %d findings" % len(self.findings) if self.findings else "")

    def explain(self) -> str:
        """Each member read, at its offset, and where the offsets come from."""
        layout, peb = self.layout, self.struct_name
        loader = self.loader_layout or layout
        lines = [str(self),
                 "Layout: %s; offsets from %s" % (layout.name, layout.provenance),
                 ""]

        def member(struct_layout: Layout, struct: str, name: str, value: str) -> str:
            return "  %-30s +%#05x  %s" % ("%s.%s" % (struct, name),
                                           struct_layout.offset(struct, name), value)

        lines.append(member(layout, peb, "BeingDebugged", "%d" % self.being_debugged))
        lines.append(member(layout, peb, "ImageBaseAddress", "%#x" % self.image_base))
        lines.append(member(layout, peb, "Ldr", "%#x -> _PEB_LDR_DATA" % self.ldr))
        lines.append(member(layout, peb, "ProcessParameters",
                            "%#x -> _RTL_USER_PROCESS_PARAMETERS" % self.process_parameters))
        params = self.parameters
        if params is not None:
            rupp = "_RTL_USER_PROCESS_PARAMETERS"
            lines.append(member(loader, rupp, "ImagePathName", repr(params.image_path.text)))
            lines.append(member(loader, rupp, "CommandLine", repr(params.command_line.text)))
            lines.append("  %-30s +%#05x  %r" % (
                rupp + ".CurrentDirectory.DosPath", loader.offset(rupp, "CurrentDirectory"),
                params.current_directory.text))
            lines.append(member(loader, rupp, "Environment", "%#x (%d strings)" % (
                params.environment_address, len(params.environment))))
        lines.append("")
        if loader is not layout:
            lines.append("Loader structures: 32-bit, layout %s" % loader.name)
        lines += ["Note: " + note for note in self.notes]
        for head, link, short in LISTS:
            walk = next((w for w in self.lists if w.name == short), None)
            if walk is not None:
                lines.append("  _PEB_LDR_DATA.%-31s +%#05x  %d entries (links at "
                             "_LDR_DATA_TABLE_ENTRY.%s +%#x)" % (
                                 head, loader.offset("_PEB_LDR_DATA", head), len(walk.entries),
                                 link, loader.offset("_LDR_DATA_TABLE_ENTRY", link)))
        if self.modules:
            lines += ["", spec_text(MODULE_COLUMNS, self.modules, indent="  ")]
        for check in self.checks:
            lines.append("Check %s: ours %r, theirs %r: %s" % (
                check.name, check.ours, check.theirs, "agree" if check.agree else "DISAGREE"))
        if self.findings:
            lines.append("")
            lines += ["Finding: " + f for f in self.findings]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return html_pre(self.explain())


@dataclass(frozen=True)
class Teb:
    """The members of ``_TEB`` that locate a thread and its process."""

    address: int
    layout: Layout
    struct_name: str
    self_pointer: int
    peb: int
    process_id: int
    thread_id: int
    stack_base: int
    stack_limit: int
    findings: Tuple[Finding, ...]
    notes: Tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"address": self.address, "self": self.self_pointer, "peb": self.peb,
                "process_id": self.process_id, "thread_id": self.thread_id,
                "stack_base": self.stack_base, "stack_limit": self.stack_limit,
                "findings": finding_dicts(self.findings), "structure": self.struct_name,
                "layout": self.layout.name, "notes": list(self.notes)}

    def __str__(self) -> str:
        return "%s at %#x: PEB %#x, process %d thread %d%s" % (
            self.struct_name, self.address, self.peb, self.process_id, self.thread_id,
            ", %d findings" % len(self.findings) if self.findings else "")

    def explain(self) -> str:
        teb, tib = self.struct_name, "_NT_TIB32" if self.struct_name == "_TEB32" else "_NT_TIB"
        off = self.layout.offset
        lines = [str(self), "Layout: %s; offsets from %s" % (self.layout.name,
                                                             self.layout.provenance), "",
                 "  %s.NtTib.Self               +%#05x  %#x" % (teb, off(tib, "Self"),
                                                                 self.self_pointer),
                 "  %s.NtTib.StackBase          +%#05x  %#x" % (teb, off(tib, "StackBase"),
                                                                 self.stack_base),
                 "  %s.NtTib.StackLimit         +%#05x  %#x" % (teb, off(tib, "StackLimit"),
                                                                 self.stack_limit),
                 "  %s.ClientId                 +%#05x  process %d, thread %d" % (
                     teb, off(teb, "ClientId"), self.process_id, self.thread_id),
                 "  %s.ProcessEnvironmentBlock  +%#05x  %#x" % (
                     teb, off(teb, "ProcessEnvironmentBlock"), self.peb)]
        lines += ["Note: " + note for note in self.notes]
        lines += ["Finding: " + f for f in self.findings]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return html_pre(self.explain())


# -- the layout from the structures' own version fields -------------------------------------
# OSMajorVersion, OSMinorVersion and OSBuildNumber sit at one offset in every
# shipped layout of an architecture (x64 _PEB +0x118/+0x11c/+0x120, x86 _PEB
# and x64 _PEB32 +0xa4/+0xa8/+0xac), as do the TEB members that lead to the
# PEB: so they can be read before the build is known (checked when read).

VERSION_FIELDS = ("OSMajorVersion", "OSMinorVersion", "OSBuildNumber")


def shared_offset(arch: str, struct_name: str, member: str) -> int:
    """The offset of ``struct_name.member`` in every shipped *arch* layout.

    Raises:
        DecodeError: the layouts disagree (then it cannot be read before the
            build is known: give a layout).
    """
    key = (arch, struct_name, member)
    if key not in _SHARED:
        offsets = set()
        for name in available_layouts():
            if name.endswith("-" + arch):
                shipped = load_layout(name)
                if shipped.has_struct(struct_name) and \
                        member in shipped.struct(struct_name).fields:
                    offsets.add(shipped.offset(struct_name, member))
        _SHARED[key] = offsets.pop() if len(offsets) == 1 else None
    if _SHARED[key] is None:
        raise DecodeError("%s.%s is not at one offset in every %s layout: give a layout"
                          % (struct_name, member, arch))
    return _SHARED[key]


_SHARED: Dict[Tuple[str, str, str], Optional[int]] = {}


def read_os_version(memory: Any, address: int, arch: str) -> Tuple[int, int, int]:
    """(OSMajorVersion, OSMinorVersion, OSBuildNumber) of the *arch* PEB at *address*
    (``x86`` for a 32-bit PEB, WoW64's _PEB32 included).

    Raises:
        InvalidAddressError: the fields cannot be read.
    """
    values = []
    for member, width in zip(VERSION_FIELDS, (4, 4, 2)):
        offset = shared_offset(arch, "_PEB", member)
        values.append(int.from_bytes(_read(memory, address + offset, width), "little"))
    return values[0], values[1], values[2]


def _shipped_versions(arch: str) -> set:
    return {_version_tuple(load_layout(n))[:2] for n in available_layouts()
            if n.endswith("-" + arch)}


def _plausible(version: Tuple[int, int, int], arch: str) -> bool:
    major, minor, build = version
    return (major, minor) in _shipped_versions(arch) and 2195 <= build < 0x10000


def choose_peb_layout(memory: Any, address: int, wow64: bool = False) -> Tuple[Layout, str]:
    """The layout of the build the PEB at *address* names in its own version
    fields, and a note saying which and why.

    A WoW64 ``_PEB32`` (``wow64``) is read at the x86 offsets and gets the
    x64 layout of its build (which holds ``_PEB32``); otherwise the PEB is
    tried as an x64 one, then as an x86 one, and the architecture whose
    offsets give a Windows version that a shipped layout has is taken.

    Raises:
        InvalidAddressError: the version fields cannot be read.
        DecodeError: neither architecture gives a known Windows version
            (give a layout).
    """
    from .layout_files import choose_layout
    tried = []
    for arch in (("x86",) if wow64 else ("x64", "x86")):
        offsets = "+%s" % "/+".join("%#x" % shared_offset(arch, "_PEB", m)
                                    for m in VERSION_FIELDS)
        try:
            version = read_os_version(memory, address, arch)
        except InvalidAddressError as exc:
            if arch == "x64" and not wow64:
                tried.append("x64 offsets %s: %s" % (offsets, exc))
                continue
            raise
        if _plausible(version, arch):
            return choose_layout(*version, "x64" if wow64 else arch,
                                 found_in="the %sPEB's own version fields at the %s offsets %s "
                                 "(OSMajorVersion, OSMinorVersion, OSBuildNumber):" % (
                                     "32-bit " if wow64 else "", arch, offsets))
        tried.append("%s offsets %s give %d.%d.%d" % ((arch, offsets) + version))
    raise DecodeError("the PEB at %#x names no Windows version a layout exists for (%s): give "
                      "a layout" % (address, "; ".join(tried)))


def choose_teb_layout(memory: Any, address: int, wow64: bool = False) -> Tuple[Layout, str]:
    """The layout for the TEB at *address*: its ProcessEnvironmentBlock (read at
    the offset every layout of the architecture shares, once NtTib.Self shows
    the architecture) leads to the PEB, whose version fields choose it
    (:func:`choose_peb_layout`).

    Raises:
        InvalidAddressError: the TEB or the PEB's version fields cannot be read.
        DecodeError: NtTib.Self does not hold the TEB's address at the x64 or
            x86 offsets, or the PEB names no known version.
    """
    for arch in (("x86",) if wow64 else ("x64", "x86")):
        width = 8 if arch == "x64" else 4
        self_at = shared_offset(arch, "_TEB", "NtTib") + shared_offset(arch, "_NT_TIB", "Self")
        if int.from_bytes(_read(memory, address + self_at, width), "little") != address:
            continue
        peb_at = shared_offset(arch, "_TEB", "ProcessEnvironmentBlock")
        peb = int.from_bytes(_read(memory, address + peb_at, width), "little")
        layout, note = choose_peb_layout(memory, peb, wow64=wow64)
        return layout, "%s; the PEB %#x is the TEB's ProcessEnvironmentBlock (+%#x, %s)" % (
            note, peb, peb_at, arch)
    raise DecodeError("no TEB at %#x: NtTib.Self does not hold its own address at the x64 or "
                      "x86 offset (give a layout)" % address)


# -- TEB -----------------------------------------------------------------------------------

def read_teb(memory: Any, address: int, layout: Any, wow64: bool = False) -> Teb:
    """Decode the TEB at ``address`` (``_TEB32`` of an x64 layout when ``wow64``).

    Raises:
        InvalidAddressError: the TEB cannot be read.
        UnknownStructError: the layout has no such TEB type.
        TypeError: the arguments are not ``(memory, address, layout)``.
    """
    address, layout = address_and_layout("read_teb", address, layout)
    layout = load_layout(layout)
    name = "_TEB32" if wow64 and layout.arch == "x64" else "_TEB"
    try:
        teb = _struct_prefix(memory, layout, name, address,
                             ["NtTib", "ClientId", "ProcessEnvironmentBlock"])
    except InvalidAddressError as exc:
        raise InvalidAddressError("%s at %#x cannot be read: %s" % (name, address, exc),
                                  address=exc.address, level=exc.level,
                                  entry=exc.entry) from None
    tib = teb["NtTib"]
    client = teb["ClientId"]
    self_pointer = tib["Self"]
    findings = []
    if self_pointer != address:
        findings.append(Finding("teb-self-mismatch", "NtTib.Self is %#x, not the TEB's own "
                                "address %#x" % (self_pointer, address)))
    return Teb(address, layout, name, self_pointer, teb["ProcessEnvironmentBlock"],
               client["UniqueProcess"], client["UniqueThread"], tib["StackBase"],
               tib["StackLimit"], tuple(findings))


# -- PEB -----------------------------------------------------------------------------------

def read_peb(memory: Any, address: int, layout: Any, max_modules: int = MAX_MODULES) -> Peb:
    """Decode the native PEB at ``address`` with its parameters and module lists.

    Args:
        memory: ``read(address, size) -> bytes``, raising InvalidAddressError.
        layout: a :class:`Layout` or a name :func:`load_layout` accepts.
        max_modules: stop each loader list after this many entries.

    Raises:
        InvalidAddressError: the PEB itself cannot be read (anything it
            points to that cannot be read is a finding instead).
        TypeError: the arguments are not ``(memory, address, layout)``.
    """
    address, layout = address_and_layout("read_peb", address, layout)
    layout = load_layout(layout)
    return _read_peb(memory, address, layout, "_PEB", layout, max_modules)


def x86_layout_for(layout: Layout) -> Tuple[Layout, Optional[str]]:
    """The x86 layout of the same release as an x64 one (for WoW64's 32-bit
    loader structures, which x64 PDBs do not carry), and a note when only a
    nearby release exists."""
    if layout.arch == "x86":
        return layout, None
    names = available_layouts()
    twin = layout.name[:-len("-x64")] + "-x86" if layout.name.endswith("-x64") else None
    if twin in names:
        return load_layout(twin), None
    version = _version_tuple(layout)
    x86 = [load_layout(n) for n in names if n.endswith("-x86")]
    older = [c for c in x86 if _version_tuple(c) <= version]
    chosen = max(older, key=_version_tuple) if older else min(x86, key=_version_tuple)
    return chosen, ("no x86 layout of %s exists; the 32-bit loader structures are read with %s "
                    "(user-mode loader offsets have not moved since XP, layouts/README.md)" % (
                        layout.name, chosen.name))


def _version_tuple(layout: Layout) -> Tuple[int, ...]:
    text = (layout.nt_version or "0").split()[0]
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def read_peb32(memory: Any, address: int, layout: Any, loader_layout: Any = None,
               max_modules: int = MAX_MODULES) -> Peb:
    """Decode a 32-bit PEB: WoW64's ``_PEB32`` in an x64 layout, or ``_PEB`` of an x86 layout.

    Args:
        loader_layout: the layout for the 32-bit ``_PEB_LDR_DATA``,
            ``_LDR_DATA_TABLE_ENTRY`` and ``_RTL_USER_PROCESS_PARAMETERS``;
            default the x86 layout of the same release.

    Raises:
        InvalidAddressError: the PEB itself cannot be read.
        DecodeError: the layout has no 32-bit PEB.
        TypeError: the arguments are not ``(memory, address, layout)``.
    """
    address, layout = address_and_layout("read_peb32", address, layout)
    layout = load_layout(layout)
    note = None
    if layout.arch == "x86":
        return _read_peb(memory, address, layout, "_PEB", layout, max_modules)
    if not layout.has_struct("_PEB32"):
        raise DecodeError("layout %s has no _PEB32 (WoW64) structure" % layout.name)
    if loader_layout is None:
        loader, note = x86_layout_for(layout)
    else:
        loader = load_layout(loader_layout)
    if loader.pointer_size != 4:
        raise DecodeError("loader layout %s is not a 32-bit layout" % loader.name)
    peb = _read_peb(memory, address, layout, "_PEB32", loader, max_modules)
    if note:
        peb = replace(peb, notes=peb.notes + (note,))
    return peb


def _read_peb(memory: Any, address: int, layout: Layout, name: str, loader: Layout,
              max_modules: int) -> Peb:
    try:
        peb = _struct_at(memory, layout, name, address)
    except InvalidAddressError as exc:
        raise InvalidAddressError("%s at %#x cannot be read: %s" % (name, address, exc),
                                  address=exc.address, level=exc.level,
                                  entry=exc.entry) from None
    findings: List[Finding] = []
    ldr = peb["Ldr"]
    params_address = peb["ProcessParameters"]
    image_base = peb["ImageBaseAddress"]
    params = None
    if params_address:
        try:
            params = read_process_parameters(memory, params_address, loader)
        except InvalidAddressError as exc:
            findings.append(Finding("process-parameters-unreadable",
                                    "ProcessParameters %#x cannot be read: %s" % (params_address,
                                                                                  exc)))
        else:
            findings += params.findings
    else:
        findings.append(Finding("process-parameters-null", "ProcessParameters is NULL"))
    modules: Tuple[Module, ...] = ()
    walks: Tuple[ListWalk, ...] = ()
    if ldr:
        try:
            modules, walks, loader_findings = read_loader_lists(memory, ldr, loader, image_base,
                                                                max_modules)
            findings += loader_findings
        except InvalidAddressError as exc:
            findings.append(Finding("ldr-unreadable",
                                    "Ldr %#x (_PEB_LDR_DATA) cannot be read: %s" % (ldr, exc)))
    else:
        findings.append(Finding("ldr-null", "Ldr is NULL (the loader has not run yet, or the "
                                            "PEB is not one)"))
    return Peb(address, layout, name, bool(peb["BeingDebugged"]), image_base, ldr,
               params_address, params, modules, walks, tuple(findings), peb,
               loader if loader is not layout else None)


# -- process parameters ----------------------------------------------------------------------

def read_process_parameters(memory: Any, address: int, layout: Layout) -> ProcessParameters:
    """Decode ``_RTL_USER_PROCESS_PARAMETERS`` at ``address``.

    When the Flags lack RTL_USER_PROC_PARAMS_NORMALIZED (a block not yet
    normalised by the loader), string Buffers are offsets from the block;
    they are rebased and a finding says so.

    Raises:
        InvalidAddressError: the block itself cannot be read.
    """
    rupp = _struct_at(memory, layout, "_RTL_USER_PROCESS_PARAMETERS", address)
    findings: List[Finding] = []
    normalized = bool(rupp["Flags"] & RTL_USER_PROC_PARAMS_NORMALIZED)
    if not normalized:
        findings.append(Finding("process-parameters-not-normalized",
                                "process parameters are not normalized (Flags %#x): Buffers are "
                                "offsets from %#x" % (rupp["Flags"], address)))

    def text(header: Struct, what: str) -> UnicodeString:
        if not normalized and header["Buffer"]:
            rebased = bytearray(header.raw)
            spec = header.field("Buffer")
            size = layout.type_info(spec.type).size
            value = (header["Buffer"] + address) & ((1 << (8 * size)) - 1)
            rebased[spec.offset:spec.offset + size] = value.to_bytes(size, "little")
            header = Struct(layout, header.name, bytes(rebased), header.address)
        value = string_from_header(memory, header)
        findings.extend(f.within(what) for f in value.findings)
        return value

    image_path = text(rupp["ImagePathName"], "ImagePathName")
    command_line = text(rupp["CommandLine"], "CommandLine")
    current = text(rupp["CurrentDirectory"]["DosPath"], "CurrentDirectory")
    environment_address = rupp["Environment"]
    if environment_address and not normalized and environment_address < address:
        environment_address += address
    size_hint = rupp.get("EnvironmentSize")
    environment, env_findings = read_environment(memory, environment_address, size_hint)
    findings += env_findings
    return ProcessParameters(address, image_path, command_line, current, tuple(environment),
                             environment_address, normalized, tuple(findings))


def read_environment(memory: Any, address: int, size: Optional[int] = None,
                     limit: int = MAX_ENVIRONMENT) -> Tuple[List[str], List[Finding]]:
    """The ``NAME=value`` strings of an environment block (UTF-16, NUL-separated,
    ending with an empty string), read page by page up to ``size`` bytes
    (EnvironmentSize, Vista+) or ``limit``."""
    findings: List[Finding] = []
    if not address:
        return [], [Finding("environment-null", "Environment is NULL")]
    bound = limit
    if size:
        if size > limit:
            findings.append(Finding("environment-limit", "EnvironmentSize %#x is above the limit "
                                    "of %#x bytes" % (size, limit)))
        bound = min(size, limit)
    data = bytearray()
    ended = False
    position = address
    while len(data) < bound:
        chunk = min(PAGE - position % PAGE, bound - len(data))
        try:
            data += _read(memory, position, chunk)
        except InvalidAddressError as exc:
            findings.append(Finding("environment-unreadable", "environment block at %#x stops "
                                    "being readable at %#x: %s" % (address, position, exc)))
            break
        position += chunk
        end = _double_nul(data, max(0, len(data) - chunk - 4) & ~1)
        if end is not None:
            data = data[:end]
            ended = True
            break
    if not ended and not findings:
        end = _double_nul(data)
        if end is None:
            findings.append(Finding("environment-unterminated", "environment block at %#x has "
                                    "no terminating empty string within %#x bytes" % (
                                        address, len(data))))
        else:
            data = data[:end]
    strings = []
    for piece in bytes(data).decode("utf-16-le", errors="replace").split("\0"):
        if piece:
            strings.append(piece)
    if "\ufffd" in "".join(strings) and b"\xfd\xff" not in data:
        findings.append(Finding("environment-invalid-utf16", "environment block at %#x holds "
                                "invalid UTF-16 (replaced by U+FFFD)" % address))
    return strings, findings


def _double_nul(data: bytearray, start: int = 0) -> Optional[int]:
    """Offset just past the empty string that ends a block (two UTF-16 NULs), if present.

    ``start`` (even): where a code-unit-aligned search may begin because the
    bytes before it were searched already; the block is read page by page and
    searching it all again each time was quadratic (17 s for 1 MiB)."""
    i = data.find(b"\0\0\0\0", start)
    while i != -1:
        if i % 2 == 0:
            return i + 2
        i = data.find(b"\0\0\0\0", i + 1)
    if len(data) >= 2 and data[:2] == b"\0\0":
        return 0
    return None


# -- loader lists ---------------------------------------------------------------------------

def walk_list(memory: Any, address: Optional[int] = None, link_offset: int = 0,
              pointer_size: Optional[int] = None, max_entries: int = MAX_MODULES,
              name: str = "list", *, head: Optional[int] = None) -> ListWalk:
    """Follow Flink from the list head at ``address`` until it comes back
    (``head=``: the old keyword of ``address``, accepted for one release).

    Returns the entry addresses (link address minus ``link_offset``). Ends
    with a finding when the list loops without returning to the head, points
    at unreadable memory, has a Blink that does not point back, or exceeds
    ``max_entries``.
    """
    head = renamed_argument("walk_list", "head", head, "address", address)
    if pointer_size not in (4, 8):
        raise TypeError("walk_list(memory, address, link_offset, pointer_size, ...): "
                        "pointer_size must be 4 or 8 (got %r)" % (pointer_size,))
    findings: List[Finding] = []
    entries: List[int] = []
    seen = {head}
    previous = head
    bad_blinks = 0
    try:
        current = int.from_bytes(_read(memory, head, pointer_size), "little")
    except InvalidAddressError as exc:
        return ListWalk(name, head, (), (Finding("list-head-unreadable", "%s: list head %#x "
                                                 "cannot be read: %s" % (name, head, exc)),))
    while current != head:
        if current == 0:
            findings.append(Finding("list-broken", "%s: Flink after %#x is NULL (list broken)"
                                    % (name, previous)))
            break
        if current in seen:
            findings.append(Finding("list-loop", "%s: list loops at %#x (reached again after %d "
                                    "entries, without returning to the head %#x)" % (
                                        name, current, len(entries), head)))
            break
        if len(entries) >= max_entries:
            findings.append(Finding("list-limit", "%s: cap of %d entries hit; walk stopped" % (
                name, max_entries)))
            break
        try:
            links = _read(memory, current, 2 * pointer_size)
        except InvalidAddressError:
            findings.append(Finding("list-outside-memory", "%s: entry points outside memory: "
                                    "Flink %#x after %#x cannot be read" % (name, current,
                                                                             previous)))
            break
        seen.add(current)
        entries.append((current - link_offset) & ((1 << (8 * pointer_size)) - 1))
        blink = int.from_bytes(links[pointer_size:], "little")
        if blink != previous:
            bad_blinks += 1
            if bad_blinks == 1:
                findings.append(Finding("list-blink-mismatch", "%s: Blink of %#x is %#x, not the "
                                        "previous link %#x" % (name, current, blink, previous)))
        previous = current
        current = int.from_bytes(links[:pointer_size], "little")
    if bad_blinks > 1:
        findings.append(Finding("list-blink-mismatch", "%s: %d links in all have a Blink that "
                                "does not point back" % (name, bad_blinks)))
    return ListWalk(name, head, tuple(entries), tuple(findings))


def read_module(memory: Any, address: Optional[int] = None, layout: Any = None, *,
                entry: Optional[int] = None) -> Module:
    """Decode the ``_LDR_DATA_TABLE_ENTRY`` at ``address`` (``entry=``: the old
    keyword, accepted for one release).

    Raises:
        InvalidAddressError: the entry cannot be read.
    """
    entry = renamed_argument("read_module", "entry", entry, "address", address)
    entry, layout = address_and_layout("read_module", entry, layout)
    layout = load_layout(layout)
    record = _struct_at(memory, layout, "_LDR_DATA_TABLE_ENTRY", entry)
    findings = []
    names = {}
    for member in ("BaseDllName", "FullDllName"):
        value = string_from_header(memory, record[member])
        names[member] = value.text
        findings += [f.within(member) for f in value.findings]
    return Module(entry, record["DllBase"], record["SizeOfImage"], record.get("EntryPoint"),
                  names["BaseDllName"], names["FullDllName"], (), tuple(findings))


def read_loader_lists(memory: Any, address: Optional[int] = None, layout: Any = None,
                      image_base: Optional[int] = None, max_modules: int = MAX_MODULES, *,
                      ldr: Optional[int] = None
                      ) -> Tuple[Tuple[Module, ...], Tuple[ListWalk, ...], List[Finding]]:
    """Walk the three module lists of the ``_PEB_LDR_DATA`` at ``address`` and
    compare them (``ldr=``: the old keyword of ``address``, for one release).

    Returns the modules (load order first, then any found only in the other
    lists), each list walk, and the findings: broken walks, and modules
    missing from a list (unlinked). The main image is not expected in the
    initialisation-order list (the loader initialises DLLs only).

    Raises:
        InvalidAddressError: ``_PEB_LDR_DATA`` itself cannot be read.
    """
    ldr = renamed_argument("read_loader_lists", "ldr", ldr, "address", address)
    ldr, layout = address_and_layout("read_loader_lists", ldr, layout)
    layout = load_layout(layout)
    header = _struct_at(memory, layout, "_PEB_LDR_DATA", ldr)
    findings: List[Finding] = []
    walks = []
    for head_member, link_member, short in LISTS:
        head = ldr + layout.offset("_PEB_LDR_DATA", head_member)
        link = layout.offset("_LDR_DATA_TABLE_ENTRY", link_member)
        walk = walk_list(memory, head, link, layout.pointer_size, max_modules, short)
        walks.append(walk)
        findings += walk.findings
    order: List[int] = []
    membership: Dict[int, List[str]] = {}
    for walk in walks:
        for entry in walk.entries:
            if entry not in membership:
                membership[entry] = []
                order.append(entry)
            if walk.name not in membership[entry]:
                membership[entry].append(walk.name)
    modules = []
    complete = {w.name for w in walks if not w.findings}
    for entry in order:
        try:
            module = read_module(memory, entry, layout)
        except (InvalidAddressError, TruncatedDataError) as exc:
            findings.append(Finding("module-unreadable",
                                    "module entry %#x cannot be read: %s" % (entry, exc)))
            continue
        lists = tuple(membership[entry])
        modules.append(replace(module, lists=lists))
        findings += [f.within("module %s at %#x" % (module.name, module.base))
                     for f in module.findings]
        for expected in ("load", "memory", "init"):
            if expected in lists or expected not in complete:
                continue
            if expected == "init" and image_base is not None and module.base == image_base:
                continue
            findings.append(Finding("module-unlinked", "module %s (entry %#x, base %#x) is in the "
                                    "%s list%s but not in the %s-order list: unlinked" % (
                                        module.name, entry, module.base, "/".join(lists),
                                        "s" if len(lists) > 1 else "", expected)))
    del header
    return tuple(modules), tuple(walks), findings
