"""``_EPROCESS`` / ``_KPROCESS`` decoded through a layout: a :class:`Process`.

Every offset comes from the build's layout (``ksinspect/windows/layouts``,
PDB-derived; see its README). What the fields mean:

* ``Pcb.Header.Type`` is 3, ``ProcessObject`` in the kernel's ``KOBJECTS``
  enum, and ``Pcb.Header.Size`` is ``sizeof(KPROCESS) / sizeof(LONG)``
  (Windows Research Kernel, ``base/ntos/ke/procobj.c``, KeInitializeProcess);
* ``Pcb.DirectoryTableBase`` is the value the kernel loads into CR3 for the
  process (an array of two on XP / 2003, whose first element is CR3);
* ``UniqueProcessId`` and ``InheritedFromUniqueProcessId`` are handle values
  in the PspCidTable, multiples of 4 (the low two bits of a handle are tag
  bits; Windows Internals, "Handles");
* ``ImageFileName`` holds the first 15 (16 up to Vista) bytes of the image
  name, NUL-terminated;
* ``CreateTime`` / ``ExitTime`` are FILETIMEs: 100-ns intervals since
  1601-01-01 UTC (MS-DTYP 2.3.3); 0 means not set;
* the WoW64 PEB: ``Wow64Process`` points to a ``_WOW64_PROCESS`` whose
  ``Wow64`` member is the 32-bit PEB (5.2 and 6.0, where the layouts type
  it so); from 6.1 to 10.0.10240 the untyped pointer is the 32-bit PEB
  itself (what PsGetProcessWow64Process returns to drivers); from
  10.0.10586 ``WoW64Process`` points to an ``_EWOW64PROCESS`` whose ``Peb``
  member is the 32-bit PEB. x86 kernels have no WoW64.
"""
import datetime
from dataclasses import dataclass, field as dataclass_field
from typing import Any, List, Optional, Tuple

from ..errors import DecodeError, InvalidAddressError, KsinspectError, TruncatedDataError
from ..views.html import html_pre
from ._api import address_and_layout, is_layout
from ..findings import Finding
from .layout import Layout
from .layout_files import load_layout
from .struct import Struct

PROCESS_OBJECT = 3                 # KOBJECTS.ProcessObject
FILETIME_EPOCH = datetime.datetime(1601, 1, 1, tzinfo=datetime.timezone.utc)
MAX_PID = 1 << 26                  # a handle table holds at most 2^24 handles of stride 4

SOURCE = ("layout %s; KPROCESS header: WRK ke/procobj.c KeInitializeProcess; "
          "FILETIME: MS-DTYP 2.3.3")


def filetime_to_iso(value: int) -> Optional[str]:
    """A FILETIME as ISO-8601 UTC (``2024-03-01T08:00:00Z``); None for 0 or
    a value beyond year 9999."""
    if not value or value < 0:
        return None
    try:
        moment = FILETIME_EPOCH + datetime.timedelta(microseconds=value // 10)
    except OverflowError:
        return None
    text = moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def _name(raw: bytes) -> str:
    """ImageFileName: bytes up to the first NUL, non-ASCII shown as \\xNN."""
    text = raw.split(b"\0", 1)[0]
    return text.decode("ascii", "backslashreplace")


@dataclass(frozen=True)
class Process:
    """One ``_EPROCESS``, decoded.

    Attributes:
        address: the EPROCESS's kernel virtual address (None when only its
            physical address is known).
        physical: its physical address, when known (psscan).
        pid, ppid: UniqueProcessId and InheritedFromUniqueProcessId.
        name: ImageFileName up to its NUL.
        dtb: Pcb.DirectoryTableBase (the process's CR3).
        peb: the Peb pointer (0 for System and other kernel processes).
        create_time, exit_time: raw FILETIMEs (see create_iso / exit_iso).
        links: ActiveProcessLinks (Flink, Blink).
        wow64_pointer: the Wow64Process / WoW64Process field (0: native).
        peb32: the 32-bit PEB of a WoW64 process, when it could be resolved.
        header_type, header_size: Pcb.Header.Type and .Size.
        layout: the layout name.
        anomalies: facts that do not fit a live, well-formed process
            (:class:`~ksinspect.findings.Finding`: a sentence with a code; also
            :attr:`findings`).
    """

    address: Optional[int]
    physical: Optional[int]
    pid: int
    ppid: int
    name: str
    dtb: int
    peb: int
    create_time: int
    exit_time: int
    links: Tuple[int, int]
    wow64_pointer: int
    peb32: Optional[int]
    header_type: int
    header_size: int
    layout: str
    anomalies: Tuple[Finding, ...] = ()
    struct: Optional[Struct] = dataclass_field(default=None, compare=False, repr=False)

    @property
    def findings(self) -> Tuple[Finding, ...]:
        """The anomalies, under the name every other Windows value uses."""
        return self.anomalies

    @property
    def create_iso(self) -> Optional[str]:
        return filetime_to_iso(self.create_time)

    @property
    def exit_iso(self) -> Optional[str]:
        return filetime_to_iso(self.exit_time)

    @property
    def is_wow64(self) -> bool:
        return self.wow64_pointer != 0

    @property
    def exited(self) -> bool:
        return self.exit_time != 0

    def to_dict(self) -> dict:
        """The pslist record: pid, ppid, name, eprocess, dtb, peb, create_time,
        exit_time (ISO-8601 UTC or null) and wow64 (the 32-bit PEB, or null)."""
        return {"pid": self.pid, "ppid": self.ppid, "name": self.name,
                "eprocess": self.address, "dtb": self.dtb, "peb": self.peb,
                "create_time": self.create_iso, "exit_time": self.exit_iso,
                "wow64": self.peb32 if self.is_wow64 else None}

    def __str__(self) -> str:
        where = "%#x" % self.address if self.address is not None else "physical %#x" % (
            self.physical or 0)
        return "process %d %s (parent %d) EPROCESS %s, DTB %#x%s" % (
            self.pid, self.name or "''", self.ppid, where, self.dtb,
            ", exited %s" % self.exit_iso if self.exited else "")

    def explain(self) -> str:
        """Each decoded field with its offset in this build and what it means."""
        lines = [str(self), "Source: " + SOURCE % self.layout, ""]
        for offset, label, value, meaning in self._rows():
            lines.append("  +%-6s %-34s %-20s %s" % (offset, label, value, meaning))
        if self.anomalies:
            lines.append("")
            lines.extend("Anomaly: " + a for a in self.anomalies)
        return "\n".join(lines)

    def _rows(self) -> List[Tuple[str, str, str, str]]:
        s = self.struct
        rows: List[Tuple[str, str, str, str]] = []

        def off(*path: str) -> str:
            if s is None:
                return "?"
            try:
                total = 0
                layout = s.layout
                struct_name = s.name
                for part in path:
                    f = layout.field(struct_name, part)
                    total += f.offset
                    struct_name = f.type
                return "%#x" % total
            except KsinspectError:
                return "?"

        rows.append((off("Pcb", "Header", "Type"), "Pcb.Header.Type", "%d" % self.header_type,
                     "3 = ProcessObject (KOBJECTS)"))
        rows.append((off("Pcb", "Header", "Size"), "Pcb.Header.Size", "%#x" % self.header_size,
                     "sizeof(KPROCESS) / 4, truncated to a byte"))
        rows.append((off("Pcb", "DirectoryTableBase"), "Pcb.DirectoryTableBase",
                     "%#x" % self.dtb, "CR3 while the process runs: its page tables"))
        rows.append((off("UniqueProcessId"), "UniqueProcessId", "%d" % self.pid,
                     "process ID (a PspCidTable handle, multiple of 4)"))
        rows.append((off("InheritedFromUniqueProcessId"), "InheritedFromUniqueProcessId",
                     "%d" % self.ppid, "the parent's process ID at creation"))
        rows.append((off("ImageFileName"), "ImageFileName", repr(self.name),
                     "first bytes of the image name, NUL-terminated"))
        rows.append((off("ActiveProcessLinks", "Flink"), "ActiveProcessLinks.Flink",
                     "%#x" % self.links[0], "next process's ActiveProcessLinks"))
        rows.append((off("ActiveProcessLinks", "Blink"), "ActiveProcessLinks.Blink",
                     "%#x" % self.links[1], "previous process's ActiveProcessLinks"))
        rows.append((off("CreateTime"), "CreateTime", "%#x" % self.create_time,
                     self.create_iso or "not set"))
        rows.append((off("ExitTime"), "ExitTime", "%#x" % self.exit_time,
                     self.exit_iso or "not set (running)"))
        rows.append((off("Peb"), "Peb", "%#x" % self.peb,
                     "user-mode PEB (in the process's own address space)"
                     if self.peb else "none (a kernel-only process)"))
        wow_name = "WoW64Process" if s is not None and "WoW64Process" in s else "Wow64Process"
        if s is not None and wow_name in s:
            rows.append((off(wow_name), wow_name, "%#x" % self.wow64_pointer,
                         ("32-bit PEB at %#x" % self.peb32 if self.peb32 is not None else
                          "WoW64, 32-bit PEB not resolved") if self.wow64_pointer
                         else "0: a native process"))
        return rows

    def _repr_html_(self) -> str:
        return html_pre(self.explain())


def _int(s: Struct, *path: str) -> int:
    value: Any = s
    for part in path:
        value = value[part]
    if isinstance(value, list):         # DirectoryTableBase[2] on XP / 2003
        value = value[0]
    if isinstance(value, Struct):       # _LARGE_INTEGER
        value = value["QuadPart"]
    return int(value)


def wow64_field(layout: Layout) -> Optional[str]:
    for name in ("WoW64Process", "Wow64Process"):
        if layout.has_struct("_EPROCESS") and name in layout.struct("_EPROCESS").fields:
            return name
    return None


def _nt_version(layout: Layout) -> Tuple[int, ...]:
    text = (layout.nt_version or "").split(" ")[0]
    try:
        return tuple(int(part) for part in text.split(".") if part)
    except ValueError:
        return ()


def resolve_peb32(layout: Layout, pointer: int, read: Any) -> Tuple[Optional[int], Optional[str]]:
    """The 32-bit PEB a WoW64 pointer leads to: (address, None) or (None, why).

    ``read(va, n)`` reads kernel memory (for the WoW64 block).
    """
    name = wow64_field(layout)
    if not pointer or name is None:
        return None, None
    target = layout.field("_EPROCESS", name).target
    if target is None and _nt_version(layout) and _nt_version(layout) < (6, 1):
        target = "_WOW64_PROCESS"        # Vista SP2 has the type untyped in its source
    if target in ("_EWOW64PROCESS", "_WOW64_PROCESS"):
        member = "Peb" if target == "_EWOW64PROCESS" else "Wow64"
        if layout.has_struct(target):
            offset = layout.offset(target, member)
        else:
            offset = 0
        try:
            raw = read(pointer + offset, layout.pointer_size)
        except (InvalidAddressError, DecodeError) as exc:
            return None, "%s at %#x (%s.%s) cannot be read: %s" % (target, pointer, target,
                                                                   member, exc)
        return int.from_bytes(raw, "little"), None
    return pointer, None


def wow64_finding(why: str) -> Finding:
    """The finding for a WoW64 process whose 32-bit PEB could not be resolved."""
    return Finding("wow64-peb-unresolved", "WoW64 process: " + why)


def decode_eprocess(data: Any, layout: Any, address: Optional[int] = None,
                    physical: Optional[int] = None, read_kernel: Any = None) -> Process:
    """Decode an ``_EPROCESS`` from its bytes.

    Args:
        data: the structure's bytes (sizeof _EPROCESS).
        layout: the build's layout (a Layout or a name). The old order
            ``decode_eprocess(layout, data)`` is accepted for one release,
            with a DeprecationWarning.
        address: its kernel virtual address, when known.
        physical: its physical address, when known.
        read_kernel: ``read(va, n)`` over the kernel address space, to follow
            the WoW64 pointer (None: the 32-bit PEB is not resolved).

    Raises:
        TruncatedDataError: data is shorter than the fields read.
        UnknownStructError, UnknownFieldError: the layout lacks a member.
    """
    if is_layout(data) and not is_layout(layout):
        import warnings
        warnings.warn("decode_eprocess(layout, data) is the old argument order; use "
                      "decode_eprocess(data, layout): the old order stops working in the next "
                      "release", DeprecationWarning, stacklevel=2)
        data, layout = layout, data
    elif not is_layout(layout):
        raise TypeError("decode_eprocess(data, layout, ...): the layout must be a Layout or a "
                        "layout name (got %s)" % type(layout).__name__)
    layout = load_layout(layout)
    s = Struct(layout, "_EPROCESS", data, address)
    header = s["Pcb"]["Header"]
    htype, hsize = _int(header, "Type"), _int(header, "Size")
    pid = _int(s, "UniqueProcessId")
    ppid = _int(s, "InheritedFromUniqueProcessId")
    raw_name = s["ImageFileName"]
    dtb = _int(s, "Pcb", "DirectoryTableBase")
    links = s["ActiveProcessLinks"]
    flink, blink = _int(links, "Flink"), _int(links, "Blink")
    create = _int(s, "CreateTime")
    exit_ = _int(s, "ExitTime") if "ExitTime" in s else 0
    peb = _int(s, "Peb")
    wname = wow64_field(layout)
    wow = _int(s, wname) if wname else 0
    anomalies = []
    if htype != PROCESS_OBJECT:
        anomalies.append(Finding("header-type", "Pcb.Header.Type is %d, not 3 (ProcessObject)"
                                 % htype))
    expected_size = (layout.sizeof("_KPROCESS") or 0) // 4
    if expected_size and expected_size <= 0xFF and hsize != expected_size:
        anomalies.append(Finding("header-size", "Pcb.Header.Size is %#x, not sizeof(KPROCESS)/4 "
                                 "= %#x" % (hsize, expected_size)))
    if pid % 4 or pid >= MAX_PID:
        anomalies.append(Finding("pid-not-a-handle", "UniqueProcessId %#x is not a multiple of 4 "
                                 "below 2^26" % pid))
    if not dtb:
        anomalies.append(Finding("dtb-zero", "DirectoryTableBase is 0"))
    elif dtb % 0x20:
        anomalies.append(Finding("dtb-misaligned", "DirectoryTableBase %#x is not 32-byte "
                                 "aligned" % dtb))
    text = raw_name.split(b"\0", 1)[0]
    if b"\0" not in raw_name or any(c < 0x20 or c > 0x7E for c in text):
        anomalies.append(Finding("image-name-not-printable", "ImageFileName %r is not printable "
                                 "ASCII ending in NUL" % raw_name))
    if create and filetime_to_iso(create) is None:
        anomalies.append(Finding("create-time-invalid", "CreateTime %#x is not a valid FILETIME"
                                 % create))
    peb32, why = (None, None)
    if wow and read_kernel is not None:
        peb32, why = resolve_peb32(layout, wow, read_kernel)
        if why:
            anomalies.append(wow64_finding(why))
    return Process(address, physical, pid, ppid, _name(raw_name), dtb, peb, create, exit_,
                   (flink, blink), wow, peb32, htype, hsize, layout.name, tuple(anomalies), s)


def read_eprocess(space: Any, address: int, layout: Any) -> Process:
    """Read and decode the ``_EPROCESS`` at a kernel virtual address.

    Args:
        space: the kernel address space (``read(va, n)``; ``vtop(va)`` when
            it has one, for the physical address).
        address: the EPROCESS's virtual address.
        layout: the build's layout (a Layout or a name).

    The order before this release, ``read_eprocess(space, layout, address)``,
    is still accepted for one release (a layout is never an integer), with a
    DeprecationWarning.

    Raises:
        InvalidAddressError: the structure is not mapped or not in the image.
        TypeError: the arguments are neither order.
    """
    address, layout = address_and_layout("read_eprocess", address, layout, old_order=True)
    layout = load_layout(layout)
    size = layout.sizeof("_EPROCESS")
    if not size:
        raise DecodeError("layout %s does not give sizeof(_EPROCESS)" % layout.name)
    data = space.read(address, size)
    physical = None
    try:
        physical = space.vtop(address)
    except KsinspectError:
        pass
    try:
        return decode_eprocess(data, layout, address, physical, space.read)
    except TruncatedDataError as exc:     # pragma: no cover - the read gave sizeof bytes
        raise DecodeError(str(exc)) from None


__all__ = ["MAX_PID", "PROCESS_OBJECT", "Process", "decode_eprocess", "filetime_to_iso",
           "read_eprocess", "resolve_peb32", "wow64_field", "wow64_finding"]
