"""Live segment state of this Linux x86 / x86-64 process.

Reads the segment registers, FS/GS base (arch_prctl), the process's LDT
(modify_ldt), probes GDT and LDT selectors with LAR and LSL, and tells
whether UMIP (User-Mode Instruction Prevention, Intel SDM vol. 3A 2.5,
CR4.UMIP) is in force. Results are plain integers, bytes and named tuples;
decode them with :mod:`ksinspect.x86` (for instance
``SegmentDescriptor.decode(lo, mode="long")`` on an LDT entry).

Everything raises :class:`ksinspect.errors.UnsupportedError` with the
reason on a host that is not Linux on x86.

Sources: Intel SDM vol. 2A "LAR", vol. 2A/2B "LSL", vol. 2B "MOV";
Linux modify_ldt(2), arch_prctl(2), arch/x86/kernel/umip.c.
"""
import os
import platform
import struct
import subprocess
import sys
from typing import Dict, List, NamedTuple, Optional, Union

from ..errors import DecodeError, UnsupportedError

__all__ = [
    "ProbedSelector", "EsLoad", "LDT_CONTENTS", "UMIP_DUMMY_GDT_BASE", "UMIP_DUMMY_IDT_BASE",
    "available", "unavailable_reason", "segment_registers", "read_ldt", "write_ldt_entry",
    "clear_ldt_entry", "ldt_selector", "lar", "lsl", "load_es", "probe_gdt", "probe_ldt",
    "descriptor_table_registers", "cpu_has_umip", "umip_in_force", "ldt_entries",
]

# struct user_desc "contents" (modify_ldt(2); desc->type bits 3:2 in the
# kernel's fill_ldt()).
LDT_CONTENTS = {"data": 0, "data-expand-down": 1, "code": 2, "code-conforming": 3}

# What Linux's UMIP emulation returns for SGDT / SIDT in user mode
# (arch/x86/kernel/umip.c, UMIP_DUMMY_GDT_BASE / UMIP_DUMMY_IDT_BASE; a
# 32-bit process gets the low 4 bytes).
UMIP_DUMMY_GDT_BASE = 0xFFFFFFFFFFFE0000
UMIP_DUMMY_IDT_BASE = 0xFFFFFFFFFFFF0000

_MAX_INDEX = 8191   # a selector's 13-bit index (SDM vol. 3A 3.4.2)


class ProbedSelector(NamedTuple):
    """A selector LAR or LSL accepted at CPL 3.

    access_rights is the LAR result masked to bits 8-15 and 20-23 (the
    descriptor's second dword), None when LAR refused the selector; limit is
    the LSL result (byte-granular), None when LSL refused it.
    """

    selector: int
    index: int
    access_rights: Optional[int]
    limit: Optional[int]


class EsLoad(NamedTuple):
    """What :func:`load_es` saw: ES before, ES after loading, the CPU's view
    of the loaded segment (LAR, LSL on the value read back), ES restored."""

    previous: int
    loaded: int
    access_rights: Optional[int]
    limit: Optional[int]
    restored: int


def unavailable_reason() -> Optional[str]:
    """Why this module cannot work here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "ksinspect.live.linux needs Linux (this is %s)" % sys.platform
    try:
        from .._native import live as _native_live
    except ImportError as exc:
        return "the compiled core is not available: %s" % exc
    if not _native_live.supported():
        return ("the live helpers need an x86 or x86-64 CPU and a core built with GCC-style "
                "inline asm (this machine is %s)" % (platform.machine() or "unknown"))
    if not _native_live.features() & _native_live.FEATURE_LINUX:
        return "the compiled core was built without the Linux system calls"
    return None


def available() -> bool:
    """True when this module works on this machine."""
    return unavailable_reason() is None


def _native():
    reason = unavailable_reason()
    if reason is not None:
        raise UnsupportedError(reason)
    from .._native import live as _native_live
    return _native_live


def _is_64bit(native) -> bool:
    return bool(native.features() & native.FEATURE_X86_64)


def segment_registers() -> Dict[str, Optional[int]]:
    """The selectors in CS, DS, ES, FS, GS, SS and the FS / GS bases.

    Returns:
        ``{"cs": ..., "ds": ..., "es": ..., "fs": ..., "gs": ..., "ss": ...,
        "fs_base": ..., "gs_base": ...}``; the bases are None in a 32-bit
        process (arch_prctl ARCH_GET_FS exists on x86-64 only).
    """
    native = _native()
    result: Dict[str, Optional[int]] = dict(native.read_sregs())
    if _is_64bit(native):
        result["fs_base"], result["gs_base"] = native.fs_gs_base()
    else:
        result["fs_base"] = result["gs_base"] = None
    return result


def read_ldt() -> bytes:
    """This process's LDT (modify_ldt func 0), as raw 8-byte entries.

    Linux zero-fills the caller's buffer past the end of the LDT, so the
    true size is not visible: trailing all-zero entries are dropped. A
    process that never wrote an LDT entry gets b"".
    """
    native = _native()
    data = native.read_ldt()
    end = len(data) - len(data) % 8
    while end and not any(data[end - 8:end]):
        end -= 8
    return data[:end]


def ldt_selector(index: int, rpl: int = 3) -> int:
    """The selector of LDT entry index: index << 3 | TI=1 | RPL (SDM vol. 3A 3.4.2)."""
    if not 0 <= index <= _MAX_INDEX or not 0 <= rpl <= 3:
        raise DecodeError("LDT index %r / RPL %r out of range" % (index, rpl))
    return index << 3 | 4 | rpl


def write_ldt_entry(index: int, base: int = 0, limit: int = 0, *,
                    contents: Union[str, int] = "data", seg_32bit: bool = True,
                    read_exec_only: bool = False, limit_in_pages: bool = False,
                    present: bool = True, useable: bool = False) -> int:
    """Write LDT entry index with modify_ldt(0x11) and return its RPL-3 selector.

    The kernel builds the descriptor itself (fill_ldt() in
    arch/x86/include/asm/desc.h): DPL 3, S=1, accessed bit set, L=0.

    Args:
        index: entry number, 0..8191.
        base: 32-bit segment base.
        limit: 20-bit limit (in 4 KiB units when limit_in_pages).
        contents: "data", "data-expand-down", "code", "code-conforming" or 0-3.
        seg_32bit: the D/B flag (Linux refuses 16-bit segments unless built
            with CONFIG_X86_16BIT).
        read_exec_only: clear the writable (data) / readable (code) bit.
        limit_in_pages: the G flag.
        present: the P flag.
        useable: the AVL flag.

    Raises:
        DecodeError: a field is out of range or the kernel refused it (EINVAL).
        UnsupportedError: not Linux x86, or the kernel lacks modify_ldt.
        ksinspect.errors.LiveOSError: any other failure (EPERM under a
            seccomp filter, for instance).
    """
    native = _native()
    if isinstance(contents, str):
        if contents not in LDT_CONTENTS:
            raise DecodeError("contents %r is not one of %s" % (contents, ", ".join(LDT_CONTENTS)))
        contents = LDT_CONTENTS[contents]
    native.write_ldt(index, base, limit, int(bool(seg_32bit)), contents,
                     int(bool(read_exec_only)), int(bool(limit_in_pages)),
                     int(not present), int(bool(useable)), 0)
    return ldt_selector(index)


def clear_ldt_entry(index: int) -> None:
    """Make LDT entry index empty (an all-zero descriptor).

    With modify_ldt(0x11) only the "empty" user_desc clears an entry: every
    field 0 except read_exec_only = 1 and seg_not_present = 1 (LDT_empty()
    in arch/x86/include/asm/desc.h); an all-zero user_desc would instead
    write a present, writable, 16-bit data segment at base 0, limit 0.
    """
    native = _native()
    native.write_ldt(index, 0, 0, 0, 0, 1, 0, 1, 0, 0)


def lar(selector: int) -> Optional[int]:
    """LAR: the access rights of selector's descriptor, None when LAR says invalid.

    The value is the descriptor's second dword masked with 0x00F0FF00
    (type, S, DPL, P in bits 15:8; AVL, L, D/B, G in 23:20; SDM vol. 2A "LAR").
    """
    valid, rights = _native().lar(selector)
    return rights if valid else None


def lsl(selector: int) -> Optional[int]:
    """LSL: selector's segment limit in bytes, None when LSL says invalid."""
    valid, limit = _native().lsl(selector)
    return limit if valid else None


def load_es(selector: int) -> EsLoad:
    """Load selector into ES, read it back with the CPU's LAR/LSL view, restore ES.

    Shows that a selector is loadable. It is checked with LAR first, so a
    selector that would fault raises DecodeError and ES is never touched.
    """
    r = _native().load_es(selector)
    return EsLoad(r["previous"], r["loaded"],
                  r["access_rights"] if r["ar_valid"] else None,
                  r["limit"] if r["limit_valid"] else None, r["restored"])


def _probe(table_indicator: int, max_index: int, rpl: int) -> List[ProbedSelector]:
    if not isinstance(max_index, int) or not 0 <= max_index <= _MAX_INDEX:
        raise DecodeError("max_index %r is not within 0..%d" % (max_index, _MAX_INDEX))
    if rpl not in (0, 1, 2, 3):
        raise DecodeError("RPL %r is not 0..3" % (rpl,))
    native = _native()
    selectors = [i << 3 | table_indicator << 2 | rpl for i in range(max_index + 1)]
    found = []
    for sel, ar_valid, rights, limit_valid, limit in native.probe_selectors(selectors):
        if ar_valid or limit_valid:
            found.append(ProbedSelector(sel, sel >> 3, rights if ar_valid else None,
                                        limit if limit_valid else None))
    return found


def probe_gdt(max_index: int = _MAX_INDEX, rpl: int = 3) -> List[ProbedSelector]:
    """Run LAR and LSL on GDT selectors 0..max_index (RPL 3) and keep the valid ones.

    From user mode only descriptors with DPL 3 (or conforming code) are
    visible, e.g. Linux x86-64's user code/data and CPUNODE entries.
    """
    return _probe(0, max_index, rpl)


def probe_ldt(max_index: int = _MAX_INDEX, rpl: int = 3) -> List[ProbedSelector]:
    """Like :func:`probe_gdt` for this process's LDT (TI=1)."""
    return _probe(1, max_index, rpl)


_CHILD = """\
import faulthandler, sys
faulthandler.disable()
from ksinspect._native import live as n
r = n.%s()
print(*(r if isinstance(r, tuple) else (r,)))
"""


def _run_in_child(function: str) -> Optional[tuple]:
    """Run one _native_live store instruction in a fresh Python; None if it faulted."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.pop("PYTHONFAULTHANDLER", None)
    proc = subprocess.run([sys.executable, "-c", _CHILD % function], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=60, check=False)
    if proc.returncode < 0:
        return None   # killed by a signal: SIGSEGV from #GP under UMIP
    if proc.returncode != 0:
        raise UnsupportedError("%s in a child process failed: %s"
                               % (function, proc.stderr.strip().splitlines()[-1:]))
    return tuple(int(v) for v in proc.stdout.split())


def descriptor_table_registers() -> Dict[str, Optional[Union[int, tuple]]]:
    """GDTR, IDTR, LDTR and TR as user mode sees them (SGDT, SIDT, SLDT, STR).

    Each instruction runs in its own child process, because under UMIP it
    raises #GP (SIGSEGV) unless the kernel emulates it. Under Linux's
    emulation the values are dummies (see UMIP_DUMMY_GDT_BASE), not the
    real registers; use :func:`umip_in_force` to tell.

    Returns:
        ``{"gdtr": (base, limit), "idtr": (base, limit), "ldtr": selector,
        "tr": selector}``, None for an instruction that faulted.
    """
    _native()
    gdtr = _run_in_child("sgdt")
    idtr = _run_in_child("sidt")
    ldtr = _run_in_child("sldt")
    tr = _run_in_child("str_")
    return {"gdtr": gdtr, "idtr": idtr,
            "ldtr": ldtr[0] if ldtr else None, "tr": tr[0] if tr else None}


def cpu_has_umip(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when /proc/cpuinfo lists the "umip" flag (CPU support, kernel aware)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return "umip" in line.split(":", 1)[1].split()
    except OSError:
        return False
    return False


def umip_in_force() -> bool:
    """True when SGDT is blocked in user mode on this machine (CR4.UMIP=1).

    Evidence: the CPU has UMIP (/proc/cpuinfo) and SGDT in a child process
    either dies with SIGSEGV or returns Linux's emulated dummy GDT base
    (arch/x86/kernel/umip.c) instead of the real GDTR.
    """
    native = _native()
    if not cpu_has_umip():
        return False
    result = _run_in_child("sgdt")
    if result is None:
        return True
    dummy = UMIP_DUMMY_GDT_BASE if _is_64bit(native) else UMIP_DUMMY_GDT_BASE & 0xFFFFFFFF
    return result[0] == dummy


def ldt_entries(data: bytes) -> List[int]:
    """Split LDT bytes into little-endian 64-bit descriptor values."""
    if len(data) % 8:
        raise DecodeError("LDT data of %d bytes is not a whole number of 8-byte entries"
                          % len(data))
    return [v for (v,) in struct.iter_unpack("<Q", data)]
