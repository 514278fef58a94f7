"""Privileged instructions at CPL 3 on this machine: what the SDM says, what
Linux does about it, and what the CPU did.

Each instruction of the seed's list (CLTS, HLT, INVD, WBINVD, INVLPG, LGDT,
LIDT, LLDT, LMSW, LTR, MOV to/from CR0/CR3/CR4 and DR7, RDMSR, WRMSR,
RDPMC, RDTSC), the UMIP-governed SGDT, SIDT, SLDT, STR and SMSW and the
IOPL-sensitive CLI, STI, IN and OUT runs
once in a forked child through the C probe (``csrc/ksi_cpu_probe.c``),
which reports the signal, si_code, the vector (sigcontext ``trapno``) and
error code, or the value the instruction produced.

The expectation has two parts:

* the SDM (vol. 3A §5.9 and each instruction's page in vol. 2): at CPL 3
  every one raises #GP(0), except RDTSC unless CR4.TSD=1, RDPMC when
  CR4.PCE=1, and SGDT/SIDT/SLDT/STR/SMSW unless CR4.UMIP=1 (§2.5);
* what Linux does with the #GP (arch/x86/kernel/traps.c: a user #GP is
  SIGSEGV with si_code SI_KERNEL; arch/x86/kernel/umip.c: SGDT, SIDT,
  SMSW, SLDT and STR are emulated with fixed dummy results instead).

This machine's CR4 bits are inferred from what user space can see:
TSD from prctl(PR_GET_TSC), PCE from the perf PMU's ``rdpmc`` setting (no
PMU, or a task without a perf mapping: 0), UMIP from /proc/cpuinfo and the
flags in /proc/cpuinfo (Linux sets CR4.UMIP whenever it keeps the umip flag),
so every UMIP row is checked against an expectation formed without it.
"""
import ctypes
import os
import signal
from dataclasses import dataclass
from typing import List, Optional, Tuple

from ..errors import UnsupportedError
from .linux import UMIP_DUMMY_GDT_BASE, UMIP_DUMMY_IDT_BASE

SI_KERNEL = 0x80
VECTOR_GP = 13
# What arch/x86/kernel/umip.c answers in place of the instruction (the SGDT and
# SIDT bases are live.linux's, which reads them).
UMIP_CR0_STATE = 0x80050033                # PE MP ET NE WP AM PG
UMIP_DUMMY_TR = 8 * 8                      # GDT_ENTRY_TSS * 8 (x86-64)
UMIP_DUMMY_LDTR_NONE = 0                   # no LDT in the process

# (name, mnemonic, SDM place, CR4 bit that lets CPL 3 run it, its sense)
# sense "allows": the bit set lets CPL 3 run it; "blocks": the bit set forbids it.
INSTRUCTIONS: Tuple[Tuple[str, str, str, Optional[str], str], ...] = (
    ("clts", "CLTS", "vol. 2A CLTS", None, ""),
    ("hlt", "HLT", "vol. 2A HLT", None, ""),
    ("invd", "INVD", "vol. 2A INVD", None, ""),
    ("wbinvd", "WBINVD", "vol. 2D WBINVD", None, ""),
    ("invlpg", "INVLPG m", "vol. 2A INVLPG", None, ""),
    ("lgdt", "LGDT m", "vol. 2A LGDT/LIDT", None, ""),
    ("lidt", "LIDT m", "vol. 2A LGDT/LIDT", None, ""),
    ("lldt", "LLDT r16", "vol. 2A LLDT", None, ""),
    ("lmsw", "LMSW r16", "vol. 2A LMSW", None, ""),
    ("ltr", "LTR r16", "vol. 2A LTR", None, ""),
    ("mov_to_cr0", "MOV CR0, r64", "vol. 2B MOV (control registers)", None, ""),
    ("mov_from_cr0", "MOV r64, CR0", "vol. 2B MOV (control registers)", None, ""),
    ("mov_to_cr3", "MOV CR3, r64", "vol. 2B MOV (control registers)", None, ""),
    ("mov_from_cr3", "MOV r64, CR3", "vol. 2B MOV (control registers)", None, ""),
    ("mov_to_cr4", "MOV CR4, r64", "vol. 2B MOV (control registers)", None, ""),
    ("mov_from_cr4", "MOV r64, CR4", "vol. 2B MOV (control registers)", None, ""),
    ("mov_to_dr7", "MOV DR7, r64", "vol. 2B MOV (debug registers)", None, ""),
    ("mov_from_dr7", "MOV r64, DR7", "vol. 2B MOV (debug registers)", None, ""),
    ("rdmsr", "RDMSR (IA32_EFER)", "vol. 2B RDMSR", None, ""),
    ("wrmsr", "WRMSR (IA32_TSC)", "vol. 2D WRMSR", None, ""),
    ("rdpmc", "RDPMC (counter 0)", "vol. 2B RDPMC", "PCE", "allows"),
    ("rdtsc", "RDTSC", "vol. 2B RDTSC", "TSD", "blocks"),
    ("sgdt", "SGDT m", "vol. 2B SGDT", "UMIP", "blocks"),
    ("sidt", "SIDT m", "vol. 2B SIDT", "UMIP", "blocks"),
    ("sldt", "SLDT r32", "vol. 2B SLDT", "UMIP", "blocks"),
    ("str", "STR r32", "vol. 2B STR", "UMIP", "blocks"),
    ("smsw", "SMSW r32", "vol. 2B SMSW", "UMIP", "blocks"),
    # IOPL-sensitive (vol. 1 §19.5): allowed when CPL <= EFLAGS.IOPL; IN/OUT
    # otherwise need the port's bit clear in the TSS I/O permission bitmap.
    ("cli", "CLI", "vol. 2A CLI", "IOPL", "iopl"),
    ("sti", "STI", "vol. 2B STI", "IOPL", "iopl"),
    ("in", "IN AL, 0x80", "vol. 2A IN", "IOPL", "iopl"),
    ("out", "OUT 0x80, AL", "vol. 2B OUT", "IOPL", "iopl"),
)

# What Linux's UMIP emulation stores instead of faulting (umip.c emulate_umip_insn).
UMIP_EMULATED = {"sgdt": UMIP_DUMMY_GDT_BASE, "sidt": UMIP_DUMMY_IDT_BASE,
                 "smsw": UMIP_CR0_STATE, "str": UMIP_DUMMY_TR, "sldt": UMIP_DUMMY_LDTR_NONE}


@dataclass(frozen=True)
class Cr4View:
    """The CR4 bits that decide CPL-3 behaviour, as far as user space can tell."""

    tsd: bool
    pce: bool
    umip: bool
    how: Tuple[str, ...]

    def bit(self, name: str) -> Optional[bool]:
        """A CR4 bit; None for IOPL, which each probe reads from its own RFLAGS."""
        return {"TSD": self.tsd, "PCE": self.pce, "UMIP": self.umip}.get(name)


@dataclass(frozen=True)
class ProbeRow:
    """One instruction: the SDM's rule at CPL 3, Linux's handling, the CPU's outcome."""

    name: str
    mnemonic: str
    encoding: bytes
    source: str
    governed_by: Optional[str]
    bit_value: Optional[int]       # the CR4 bit (0/1), or EFLAGS.IOPL for IOPL rows
    sdm: str               # "#GP(0)" or "executes"
    linux: str             # what the kernel makes of it
    faulted: bool
    signal: int
    si_code: int
    trapno: int
    error_code: int
    value: int
    value_high: int

    @property
    def observed(self) -> str:
        if self.faulted:
            name = signal.Signals(self.signal).name if self.signal else "signal 0"
            return "%s (si_code %#x), trapno %d, error code %#x" % (
                name, self.si_code, self.trapno, self.error_code)
        if self.name in ("sgdt", "sidt"):
            return "stored base %#x, limit %#x" % (self.value, self.value_high)
        if self.name in ("rdtsc", "rdpmc", "rdmsr"):
            return "EDX:EAX = %#x:%08x" % (self.value_high, self.value)
        return "completed, result %#x" % self.value

    @property
    def agrees(self) -> bool:
        """The CPU did what the SDM says, as Linux documents it shows up."""
        if self.sdm == "executes":
            return not self.faulted
        if self.name in UMIP_EMULATED and self.linux.startswith("emulated"):
            return not self.faulted and self.value == UMIP_EMULATED[self.name]
        return (self.faulted and self.signal == signal.SIGSEGV and self.si_code == SI_KERNEL
                and self.trapno == VECTOR_GP and self.error_code == 0)

    def to_dict(self) -> dict:
        return {"instruction": self.name, "mnemonic": self.mnemonic,
                "encoding": self.encoding.hex(" "), "source": "Intel SDM " + self.source,
                "governed_by": None if self.governed_by is None else (
                    "EFLAGS." if self.governed_by == "IOPL" else "CR4.") + self.governed_by,
                "bit": self.bit_value, "sdm_at_cpl3": self.sdm, "linux": self.linux,
                "observed": self.observed, "faulted": self.faulted, "signal": self.signal,
                "si_code": self.si_code, "trapno": self.trapno, "error_code": self.error_code,
                "value": self.value, "value_high": self.value_high, "agrees": self.agrees}


def _prctl_tsc() -> Tuple[Optional[bool], str]:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        state = ctypes.c_int(0)
        if libc.prctl(25, ctypes.byref(state), 0, 0, 0) != 0:    # PR_GET_TSC
            return None, "prctl(PR_GET_TSC) failed"
    except (OSError, AttributeError):
        return None, "no prctl"
    # PR_TSC_ENABLE (1): CR4.TSD clear for this task; PR_TSC_SIGSEGV (2): set.
    return state.value == 2, "prctl(PR_GET_TSC) = %d" % state.value


def _rdpmc_setting() -> Tuple[bool, str]:
    for path in ("/sys/bus/event_source/devices/cpu/rdpmc",
                 "/sys/bus/event_source/devices/cpu_core/rdpmc"):
        try:
            with open(path, encoding="ascii") as fh:
                value = fh.read().strip()
        except OSError:
            continue
        # 2: CR4.PCE always set; 1: only while the task has a perf event mapped
        # (the probe child has none); 0: never (Linux perf_event.c, x86_pmu_event_mapped).
        return value == "2", "%s = %s" % (path, value)
    return False, "no perf PMU exposes rdpmc: Linux never sets CR4.PCE"


def cr4_view() -> Cr4View:
    from . import linux
    tsd, tsd_how = _prctl_tsc()
    pce, pce_how = _rdpmc_setting()
    # Linux sets CR4.UMIP at boot whenever it keeps the umip CPU flag
    # (arch/x86/kernel/cpu/common.c setup_umip clears the flag otherwise).
    umip = linux.cpu_has_umip()
    return Cr4View(bool(tsd), pce, umip, (
        "TSD=%d from %s" % (bool(tsd), tsd_how), "PCE=%d from %s" % (pce, pce_how),
        "UMIP=%d from /proc/cpuinfo (%s)" % (umip, "umip flag" if umip else "no umip flag")))


def _probe_in_child(code: int) -> Tuple[int, ...]:
    from .._native import cpu_probe as probe
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:          # the child: run, report, leave without Python's cleanup
        try:
            os.close(read_end)
            os.write(write_end, probe.PROBE_RECORD.pack(*probe.run(code)))
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    with os.fdopen(read_end, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    if len(data) != probe.PROBE_RECORD.size:
        raise UnsupportedError("the probe child for instruction %d ended with status %#x "
                               "without a report" % (code, status))
    return probe.PROBE_RECORD.unpack(data)


def privileged_table() -> List[ProbeRow]:
    """Run every instruction once at CPL 3 and set the outcome beside the rules.

    Raises:
        UnsupportedError: not x86-64 Linux.
    """
    from .._native import cpu_probe as probe
    from . import linux
    reason = linux.unavailable_reason()
    if reason:
        raise UnsupportedError("live --privileged: %s" % reason)
    view = cr4_view()
    fields = probe.PROBE_FIELDS
    rows = []
    for name, mnemonic, source, bit, sense in INSTRUCTIONS:
        code = probe.INSTRUCTIONS[name]
        value = view.bit(bit) if bit else None
        allowed = (bit is not None and ((sense == "allows" and value) or
                                        (sense == "blocks" and not value)))
        sdm = "executes" if allowed else "#GP(0)"
        if sdm == "executes":
            linux_text = "runs in user mode"
        elif name in UMIP_EMULATED:
            linux_text = "emulated by arch/x86/kernel/umip.c: stores %#x" % UMIP_EMULATED[name]
        else:
            linux_text = "SIGSEGV, si_code SI_KERNEL (arch/x86/kernel/traps.c)"
        r = dict(zip(fields, _probe_in_child(code)))
        if sense == "iopl":
            # CPL 3 <= IOPL? And for IN/OUT, no I/O bitmap: Linux leaves the TSS's
            # map base invalid for a task that never called ioperm()/iopl()
            # (arch/x86/kernel/process.c), as the guests' TSSs show.
            value = r["rflags"] >> 12 & 3
            sdm = "executes" if 3 <= value else "#GP(0)"
            linux_text = ("runs in user mode" if sdm == "executes" else
                          "SIGSEGV, si_code SI_KERNEL (arch/x86/kernel/traps.c)")
        rows.append(ProbeRow(name, mnemonic, probe.encoding(code), source, bit,
                             None if value is None else int(value), sdm, linux_text,
                             bool(r["faulted"]), r["signal"], r["si_code"], r["trapno"],
                             r["error_code"], r["value"], r["value_high"]))
    return rows
