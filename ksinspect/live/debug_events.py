"""The values a debugging session deals in, the same for every backend.

The ptrace lab (:mod:`ksinspect.live.debugger`, Linux) and the Win32 debug
API (:mod:`ksinspect.live.win32_debugger`, Windows, or Wine) set the same
three kinds of breakpoint and report the same events, so a script or a
notebook written for one runs on the other:

* breakpoints: :class:`HardwareBreakpoint` (a DR0-DR3 slot),
  :class:`SoftwareBreakpoint` (an INT3 byte), :class:`GuardPage` (a page
  whose rights are taken away; on Windows :class:`WindowsGuardPage`, whose
  rights are PAGE_* constants);
* events: :class:`HardwareHit`, :class:`SoftwareHit`, :class:`GuardHit`,
  :class:`SignalEvent` (Linux: a signal not ours), :class:`ExitEvent`,
  :class:`ExecEvent` (Linux), and on Windows every DEBUG_EVENT itself as a
  :class:`ksinspect.windows.debug_event.DebugEvent`;
* :class:`CleanupReport`: what ``close()`` put back.

How each backend produces them is in its own module: Linux reports hits as
signals (SIGTRAP with si_code TRAP_HWBKPT / SI_KERNEL, SIGSEGV with
SEGV_ACCERR), Windows as exceptions (EXCEPTION_SINGLE_STEP,
EXCEPTION_BREAKPOINT, STATUS_GUARD_PAGE_VIOLATION or an access violation);
``GuardHit.si_code`` names whichever the system used.
"""
from dataclasses import dataclass, field
from typing import Optional, Tuple, Union

from ..views.html import text_html
from ..x86.debugreg import DR6, Condition

PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4

# ---------------------------------------------------------------- breakpoints

@dataclass
class HardwareBreakpoint:
    """A DR0-DR3 slot: its address, condition (execute, write, readwrite) and length."""

    slot: int
    address: int
    condition: Condition
    length: int
    symbol: Optional[str] = None
    hits: int = 0
    last: Optional[bytes] = field(default=None, repr=False)   # bytes read at arm / last hit

    def to_dict(self) -> dict:
        return {"kind": "hw", "slot": self.slot, "address": self.address,
                "condition": self.condition.label, "length": self.length,
                "symbol": self.symbol, "hits": self.hits}


@dataclass
class SoftwareBreakpoint:
    """An INT3 (0xCC) written over the first byte of an instruction."""

    address: int
    original: int
    symbol: Optional[str] = None
    hits: int = 0
    armed: bool = False

    def to_dict(self) -> dict:
        return {"kind": "sw", "address": self.address, "original_byte": self.original,
                "symbol": self.symbol, "hits": self.hits}


@dataclass
class GuardPage:
    """A page whose access rights are taken away (a Linux guard page)."""

    address: int
    page: int
    original_prot: int
    access: str                  # "any" (PROT_NONE) or "write" (read-only)
    once: bool = False
    symbol: Optional[str] = None
    hits: int = 0
    armed: bool = False

    @property
    def guarded_prot(self) -> int:
        return 0 if self.access == "any" else self.original_prot & ~PROT_WRITE

    @property
    def original_rights(self) -> str:
        return prot_text(self.original_prot)

    @property
    def guarded_rights(self) -> str:
        return prot_text(self.guarded_prot)

    def to_dict(self) -> dict:
        return {"kind": "guard", "address": self.address, "page": self.page,
                "original_prot": self.original_rights, "access": self.access,
                "once": self.once, "symbol": self.symbol, "hits": self.hits}


@dataclass
class WindowsGuardPage(GuardPage):
    """A Windows memory breakpoint: ``original_prot`` is a PAGE_* protection.

    access "any" adds PAGE_GUARD (any access raises a one-shot
    STATUS_GUARD_PAGE_VIOLATION, and the system removes PAGE_GUARD itself);
    "write" takes the write right away (PAGE_READWRITE -> PAGE_READONLY,
    PAGE_WRITECOPY -> PAGE_READONLY...), so only a write faults, with
    EXCEPTION_ACCESS_VIOLATION (parameter 0 = 1, write).
    """

    @property
    def guarded_prot(self) -> int:
        from ..windows.memory_info import guarded_protection
        return guarded_protection(self.original_prot, self.access)

    @property
    def original_rights(self) -> str:
        from ..windows.memory_info import protection_text
        return protection_text(self.original_prot)

    @property
    def guarded_rights(self) -> str:
        from ..windows.memory_info import protection_text
        return protection_text(self.guarded_prot)


def prot_text(prot: int) -> str:
    return "".join(c if prot & bit else "-" for c, bit in (("r", PROT_READ), ("w", PROT_WRITE),
                                                          ("x", PROT_EXEC)))


# --------------------------------------------------------------------- events

def _hex(value: Optional[int]) -> str:
    return "-" if value is None else "%#x" % value


def _where(address: int, symbol: Optional[str]) -> str:
    return "%#x%s" % (address, " <%s>" % symbol if symbol else "")


class _Shown:
    """Notebook view of an event: its line, escaped (plus explain() when there is one)."""

    def explain(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return text_html(self)


@dataclass(frozen=True)
class HardwareHit(_Shown):
    """A DR0-DR3 breakpoint fired (SIGTRAP, si_code TRAP_HWBKPT, DR6.Bn set)."""

    tid: int
    rip: int
    rip_symbol: Optional[str]
    slot: int
    address: int
    address_symbol: Optional[str]
    condition: str
    length: int
    dr6: DR6
    old: Optional[int] = None
    new: Optional[int] = None
    kind: str = "hw"

    def to_dict(self) -> dict:
        return {"event": self.kind, "tid": self.tid, "rip": self.rip,
                "rip_symbol": self.rip_symbol, "slot": self.slot, "address": self.address,
                "address_symbol": self.address_symbol, "condition": self.condition,
                "length": self.length, "old": self.old, "new": self.new,
                "dr6": self.dr6.to_dict()}

    def explain(self) -> str:
        """The event, then DR6 field by field (which slot, BS/BD/BT, the fixed bits)."""
        return str(self) + "\n\n" + self.dr6.explain()

    def __str__(self) -> str:
        text = "hw     tid %-7d rip %s  DR%d %s/%d at %s" % (
            self.tid, _where(self.rip, self.rip_symbol), self.slot, self.condition, self.length,
            _where(self.address, self.address_symbol))
        if self.condition != "execute":
            text += "  %s -> %s" % (_hex(self.old), _hex(self.new))
        dr6 = self.dr6
        text += "  DR6 %#x (slot %s fired%s)" % (
            dr6.raw, ",".join(str(n) for n in dr6.hits) or "none",
            "".join(", " + n.upper() for n in ("bs", "bd", "bt") if getattr(dr6, n)))
        return text


@dataclass(frozen=True)
class SoftwareHit(_Shown):
    """An INT3 breakpoint was reached (SIGTRAP, si_code SI_KERNEL, RIP = address + 1)."""

    tid: int
    rip: int
    rip_symbol: Optional[str]
    original_byte: int
    hits: int
    kind: str = "sw"

    def to_dict(self) -> dict:
        return {"event": self.kind, "tid": self.tid, "rip": self.rip,
                "rip_symbol": self.rip_symbol, "original_byte": self.original_byte,
                "hits": self.hits}

    def __str__(self) -> str:
        return "sw     tid %-7d rip %s  int3 over byte %#04x, hit %d" % (
            self.tid, _where(self.rip, self.rip_symbol), self.original_byte, self.hits)


@dataclass(frozen=True)
class GuardHit(_Shown):
    """An access to a guarded page faulted (SIGSEGV, si_code SEGV_ACCERR, si_addr)."""

    tid: int
    rip: int
    rip_symbol: Optional[str]
    address: int
    address_symbol: Optional[str]
    page: int
    access: str
    si_code: str                 # how the system reported it (SEGV_ACCERR, STATUS_GUARD_PAGE_VIOLATION...)
    rearmed: bool
    touch: Optional[str] = None  # read / write / execute, when the system says (Windows does)
    kind: str = "guard"

    def to_dict(self) -> dict:
        return {"event": self.kind, "tid": self.tid, "rip": self.rip,
                "rip_symbol": self.rip_symbol, "address": self.address,
                "address_symbol": self.address_symbol, "page": self.page,
                "access": self.access, "si_code": self.si_code, "rearmed": self.rearmed,
                "touch": self.touch}

    def __str__(self) -> str:
        return "guard  tid %-7d rip %s  %s %s (page %#x, guard on %s access, %s)%s" % (
            self.tid, _where(self.rip, self.rip_symbol),
            "touched" if self.touch is None else "%s of" % self.touch,
            _where(self.address, self.address_symbol),
            self.page, self.access, self.si_code, "" if self.rearmed else ", not re-armed")


@dataclass(frozen=True)
class SignalEvent(_Shown):
    """A signal the tracee received that is not a breakpoint; it is delivered."""

    tid: int
    rip: int
    rip_symbol: Optional[str]
    signal: str
    si_code: int
    kind: str = "signal"

    def to_dict(self) -> dict:
        return {"event": self.kind, "tid": self.tid, "rip": self.rip,
                "rip_symbol": self.rip_symbol, "signal": self.signal, "si_code": self.si_code}

    def __str__(self) -> str:
        return "signal tid %-7d rip %s  %s (si_code %#x), passed to the program" % (
            self.tid, _where(self.rip, self.rip_symbol), self.signal, self.si_code)


@dataclass(frozen=True)
class ExitEvent(_Shown):
    """The tracee exited (status) or was killed (signal)."""

    pid: int
    status: Optional[int]
    signal: Optional[str]
    kind: str = "exit"

    def to_dict(self) -> dict:
        return {"event": self.kind, "pid": self.pid, "status": self.status, "signal": self.signal}

    def __str__(self) -> str:
        how = "exited with status %d" % self.status if self.signal is None else \
            "killed by %s" % self.signal
        return "exit   pid %-7d %s" % (self.pid, how)


@dataclass(frozen=True)
class ExecEvent(_Shown):
    """The tracee called execve: a new image, without any of the session's
    breakpoints (its memory is new and Linux drops ptrace debug registers on
    exec). The session ends; close() detaches."""

    pid: int
    path: Optional[str]
    kind: str = "exec"

    def to_dict(self) -> dict:
        return {"event": self.kind, "pid": self.pid, "path": self.path}

    def __str__(self) -> str:
        return "exec   pid %-7d now runs %s: its breakpoints are gone, the session ends" % (
            self.pid, self.path or "another program")


Event = Union[HardwareHit, SoftwareHit, GuardHit, SignalEvent, ExitEvent, ExecEvent]


@dataclass(frozen=True)
class CleanupReport:
    """What :meth:`ksinspect.live.debug_session.DebugSession.close` put back."""

    pid: int
    bytes_restored: int
    threads_debugregs_restored: int
    pages_restored: int
    threads_detached: int
    outcome: str                 # "detached", "killed" or "exited"
    errors: Tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"event": "end", "pid": self.pid, "bytes_restored": self.bytes_restored,
                "threads_debugregs_restored": self.threads_debugregs_restored,
                "pages_restored": self.pages_restored, "threads_detached": self.threads_detached,
                "outcome": self.outcome, "errors": list(self.errors)}

    def __str__(self) -> str:
        text = ("end    pid %-7d %s; restored %d byte(s), debug registers of %d thread(s), "
                "%d page protection(s)" % (self.pid, self.outcome, self.bytes_restored,
                                           self.threads_debugregs_restored, self.pages_restored))
        if self.errors:
            text += "; problems: " + "; ".join(self.errors)
        return text
