"""Decoded views of this machine's segments, as user mode can see them.

User mode cannot read the GDT, but LAR and LSL reveal, per selector, the
descriptor's attribute bits and its effective limit (SDM vol. 2A "LAR",
"LSL"). From those a descriptor is rebuilt and decoded; only the base stays
unknown (LAR does not report it), except FS/GS whose bases come from MSRs.
"""
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import List, Optional

from ..errors import KsinspectError
from ..x86 import DescriptorMode, SegmentDescriptor, Selector
from ..x86.descriptor import decode_descriptor_table
from . import linux

REGISTERS = ("cs", "ss", "ds", "es", "fs", "gs")


def descriptor_from_lar_lsl(access_rights: int, limit: int,
                            mode: DescriptorMode = DescriptorMode.LONG) -> SegmentDescriptor:
    """Rebuild a descriptor (base 0) from LAR's access rights and LSL's limit.

    LAR returns the descriptor's second dword masked with 0x00F0FF00; LSL the
    limit already scaled by G, so the 20-bit field is limit >> 12 when G=1.
    """
    granular = bool(access_rights & (1 << 23))
    raw_limit = (limit >> 12) if granular else limit
    high = (access_rights & 0x00F0FF00) | (raw_limit & 0xF0000)
    return SegmentDescriptor.decode((high << 32) | (raw_limit & 0xFFFF), None, mode)


@dataclass(frozen=True)
class LiveSegment:
    """A segment register of this process, decoded.

    Attributes:
        register: "cs", "ss", "ds", "es", "fs" or "gs".
        selector: the register's selector.
        descriptor: rebuilt from LAR/LSL (base shown as 0), None when LAR
            refuses the selector (the null selector, for instance).
        base: the segment base where it is knowable: FS/GS from
            arch_prctl; None otherwise.
    """

    register: str
    selector: Selector
    descriptor: Optional[SegmentDescriptor]
    base: Optional[int]

    def to_dict(self) -> dict:
        result = {"register": self.register.upper(), "selector": self.selector.raw,
                  "index": self.selector.index, "table": self.selector.table.value,
                  "rpl": self.selector.rpl, "base": self.base}
        if self.descriptor is not None:
            d = self.descriptor.to_dict()
            for key in ("kind", "type", "type_name", "dpl", "present", "limit", "granularity",
                        "long", "db", "width", "anomalies"):
                result[key] = d[key]
        return result


def _visible(selector: int) -> Optional[SegmentDescriptor]:
    rights, limit = linux.lar(selector), linux.lsl(selector)
    if rights is None or limit is None:
        return None
    return descriptor_from_lar_lsl(rights, limit)


def live_segments() -> List[LiveSegment]:
    """The current CS, SS, DS, ES, FS and GS, decoded."""
    registers = linux.segment_registers()
    segments = []
    for name in REGISTERS:
        value = registers[name]
        base = registers.get(name + "_base")
        segments.append(LiveSegment(name, Selector.decode(value), _visible(value), base))
    return segments


@dataclass(frozen=True)
class VisibleDescriptor:
    """A GDT or LDT slot that LAR and LSL accept at RPL 3."""

    selector: Selector
    descriptor: SegmentDescriptor

    def to_dict(self) -> dict:
        result = {"selector": self.selector.raw, "index": self.selector.index,
                  "table": self.selector.table.value}
        result.update(self.descriptor.to_dict())
        return result


def visible_gdt(max_index: int = 8191) -> List[VisibleDescriptor]:
    """Every GDT descriptor that user mode can see, rebuilt from LAR/LSL."""
    return [VisibleDescriptor(Selector.decode(p.selector),
                              descriptor_from_lar_lsl(p.access_rights, p.limit))
            for p in linux.probe_gdt(max_index) if p.access_rights is not None
            and p.limit is not None]


def ldt() -> List[SegmentDescriptor]:
    """This process's LDT, read with modify_ldt and decoded (usually empty)."""
    return list(decode_descriptor_table(linux.read_ldt(), "long", "segments"))


# The demo runs in a child so that this process's LDT and ES stay untouched.
_DEMO = """
import json
from ksinspect.live import linux
index, base, limit = {index}, {base}, {limit}
selector = linux.write_ldt_entry(index, base, limit, contents="data", seg_32bit=True)
loaded = linux.load_es(selector)
raw = linux.read_ldt()[8 * index:8 * index + 8]
print(json.dumps({{"selector": selector, "raw": raw.hex(), "loaded": loaded.loaded,
                  "access_rights": loaded.access_rights, "limit": loaded.limit,
                  "es_restored": loaded.restored}}))
"""


@dataclass(frozen=True)
class LdtDemo:
    """One LDT entry written by a child process and loaded into its ES."""

    selector: Selector
    descriptor: SegmentDescriptor   # the 8 bytes read back with modify_ldt
    loaded: int                     # ES after the load
    cpu_view: Optional[SegmentDescriptor]  # LAR/LSL of the loaded ES

    def to_dict(self) -> dict:
        return {"selector": self.selector.to_dict(), "descriptor": self.descriptor.to_dict(),
                "es_loaded": self.loaded,
                "cpu_view": None if self.cpu_view is None else self.cpu_view.to_dict()}


def ldt_demo(index: int = 1, base: int = 0x12ABC000, limit: int = 0x12345) -> LdtDemo:
    """Write LDT entry index in a child process, load it into ES, and decode both views.

    Raises:
        UnsupportedError: not Linux x86.
        KsinspectError: the child failed (its last error line is the message).
    """
    linux.unavailable_reason() is None or linux.segment_registers()  # raises with the reason
    result = subprocess.run([sys.executable, "-c", _DEMO.format(index=index, base=base, limit=limit)],
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["exit status %d" % result.returncode]
        raise KsinspectError("LDT demo child failed: %s" % lines[-1])
    data = json.loads(result.stdout)
    cpu_view = None
    if data["access_rights"] is not None and data["limit"] is not None:
        cpu_view = descriptor_from_lar_lsl(data["access_rights"], data["limit"])
    return LdtDemo(Selector.decode(data["selector"]),
                   SegmentDescriptor.from_bytes(bytes.fromhex(data["raw"]), "long"),
                   data["loaded"], cpu_view)
