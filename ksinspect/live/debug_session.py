"""What every debugger backend does the same way, written once.

The ptrace engine (:mod:`ksinspect.live.ptrace_debugger`, Linux) and the
Win32 debug API engine (:mod:`ksinspect.live.win32_debugger`, Windows or
Wine) differ in how they stop a process, reach a thread's registers and
change a page's rights; they agree on everything else, which lives here in
:class:`DebugSession`:

* the bookkeeping: the four DR0-DR3 slots and the DR7 that enables them,
  the INT3 bytes and their originals, the guarded pages, the hit count;
* the three ``add_*`` calls (resolve the address, check it, write it while
  the process cannot run), arming a thread's debug registers (saving what
  it had first), and building the hit events;
* the end: ``close()`` (also from ``with``, ``__del__`` and at interpreter
  exit for every session still open) puts back every debug register, byte
  and page protection, then lets the process go (or kills a program it
  started, with ``kill_on_close``), and reports what it did.

A backend supplies the primitives, named ``_still``, ``_read_debugregs``,
``_write_debugregs``, ``_protect``, ``_new_guard``, ``_quiesce``,
``_owes_registers``, ``_let_go``, ``_after_exit``, ``_forget`` and
``_exit_event`` (each documented below), plus its own start, attach and
event loop.
"""
import atexit
import contextlib
import weakref
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from ..errors import (DecodeError, EncodeError, KsinspectError, LiveOSError, NoSuchProcessError,
                      UnsupportedError)
from ..x86.debugreg import DR6, DR7, Breakpoint, Condition, condition as parse_condition, encode_dr7
from .debug_events import (CleanupReport, ExitEvent, GuardHit, GuardPage, HardwareBreakpoint,
                           HardwareHit, SoftwareBreakpoint, SoftwareHit)

INT3 = 0xCC
DR6_CLEAR = 0xFFFF0FF0        # DR6 with nothing recorded (SDM vol. 3B §17.2.3)
DEBUG_REGISTERS = (0, 1, 2, 3, 6, 7)

Address = Union[int, str]
Attempt = Callable[[str, Callable[[], object]], bool]


def split_offset(where: str) -> Tuple[str, int]:
    """``"name+0x10"`` -> ``("name", 0x10)``: the offset is hex, like every
    number ksinspect reads (``0x`` optional).

    Raises:
        DecodeError: what follows '+' is not a hex number.
    """
    name, _, offset = where.partition("+")
    if not offset:
        return name.strip(), 0
    digits = offset.strip()
    try:
        return name.strip(), int(digits[2:] if digits.lower().startswith("0x") else digits, 16)
    except ValueError:
        raise DecodeError("%r: the offset after '+' is not a hex number" % where) from None


def check_start(reason: Optional[str], argv: Sequence[str]) -> None:
    """The refusals of ``start()`` before anything runs."""
    if reason:
        raise UnsupportedError(reason)
    if not argv:
        raise DecodeError("no program to start")


def check_attach(reason: Optional[str], pid: int, own_pid: int, verb: str) -> None:
    """The refusals of ``attach()`` before anything is opened."""
    if reason:
        raise UnsupportedError(reason)
    if pid <= 0:
        raise DecodeError("process id %d is not valid" % pid)
    if pid == own_pid:
        raise DecodeError("process %d is ksinspect itself: a process cannot %s itself"
                          % (pid, verb))


def new_hardware_breakpoint(existing: Dict[int, HardwareBreakpoint], address: int,
                            symbol: Optional[str], condition, length: int, slot: Optional[int],
                            read: Callable[[int, int], bytes]) -> Tuple[HardwareBreakpoint, DR7]:
    """The breakpoint for a slot (the lowest free one unless given) and the DR7
    that enables it beside the existing ones, by ksinspect's encoder; a data
    breakpoint keeps the bytes it watches (None when not readable yet).

    Raises:
        EncodeError: no free slot, a slot in use, or the encoder's refusal.
    """
    cond = parse_condition(condition)
    if slot is None:
        free = [n for n in range(4) if n not in existing]
        if not free:
            raise EncodeError("all four debug address registers DR0-DR3 are in use")
        slot = free[0]
    if slot in existing:
        raise EncodeError("slot %d (DR%d) is already in use" % (slot, slot), slot)
    bp = HardwareBreakpoint(slot, address, cond, length, symbol)
    dr7 = encode_dr7([Breakpoint(b.slot, b.condition, b.length, "local", b.address)
                      for b in list(existing.values()) + [bp]])
    if cond is not Condition.EXECUTE:
        try:
            bp.last = read(address, length)
        except LiveOSError:
            bp.last = None             # not mapped yet: no old value for the first hit
    return bp, dr7


def watched_change(bp: HardwareBreakpoint,
                   read: Callable[[int, int], bytes]) -> Tuple[Optional[int], Optional[int]]:
    """(old, new) of a data breakpoint's bytes at a hit (a trap: the write is
    done); the new bytes become the old ones of the next hit."""
    if bp.condition is Condition.EXECUTE:
        return None, None
    try:
        now: Optional[bytes] = read(bp.address, bp.length)
    except LiveOSError:
        now = None                     # unmapped right after the access (munmap)
    old = int.from_bytes(bp.last, "little") if bp.last is not None else None
    new = int.from_bytes(now, "little") if now is not None else None
    bp.last = now
    return old, new


_OPEN_SESSIONS: "weakref.WeakSet[DebugSession]" = weakref.WeakSet()


@atexit.register
def _close_open_sessions() -> None:      # never leave 0xCC bytes behind at exit
    for session in list(_OPEN_SESSIONS):
        with contextlib.suppress(Exception):
            session.close()


class DebugSession:
    """A breakpoint session on one process, whatever the system underneath.

    Attributes:
        tracee: the process (its ``pid``, ``threads``, ``read``/``write``,
            ``resolve``, ``describe``, ``page_size``, ``started``, ``alive``).
        hardware: slot -> :class:`HardwareBreakpoint`.
        software: address -> :class:`SoftwareBreakpoint`.
        guards: page -> :class:`GuardPage`.
        hits: breakpoint hits so far (``events(count=)`` counts these).
        report: what ``close()`` put back (None while open).
        kill_on_close: for a program the debugger started, end it at the
            close instead of letting it run on.
    """

    def __init__(self, tracee, kill_on_close: bool = False):
        self.tracee = tracee
        self.kill_on_close = kill_on_close
        self.hardware: Dict[int, HardwareBreakpoint] = {}
        self.software: Dict[int, SoftwareBreakpoint] = {}
        self.guards: Dict[int, GuardPage] = {}            # by page
        self.report: Optional[CleanupReport] = None
        self.hits = 0
        self._closed = False
        self._dr7 = 0
        self._ended: Optional[str] = None  # why the session cannot go on ("exec")
        _OPEN_SESSIONS.add(self)

    def _forget_session(self) -> None:
        self._closed = True
        _OPEN_SESSIONS.discard(self)

    @property
    def dr7(self) -> DR7:
        """The DR7 value written into every thread (decoded)."""
        return DR7(self._dr7)

    # ---------------------------------------------------------- adding
    def add_hardware(self, where: Address, condition: Union[str, Condition] = "execute",
                     length: int = 1, slot: Optional[int] = None) -> HardwareBreakpoint:
        """Program a DRn slot in every thread (the lowest free one unless slot
        is given); threads created later get it too.

        Raises:
            EncodeError: the DR7 encoder refused it (alignment, length, slot).
        """
        self._require_open()
        address, symbol = self.tracee.resolve(where)
        bp, dr7 = new_hardware_breakpoint(self.hardware, address, symbol, condition, length,
                                          slot, self.tracee.read)
        with self._still():
            self.hardware[bp.slot] = bp
            self._dr7 = dr7.raw
            for thread in list(self.tracee.threads.values()):
                self._arm_thread(thread)
        return bp

    def add_software(self, where: Address) -> SoftwareBreakpoint:
        """Keep the byte at the address and write 0xCC over it.

        Raises:
            DecodeError: the address is not mapped in the process.
            EncodeError: there is a software breakpoint there already.
        """
        self._require_open()
        address, symbol = self.tracee.resolve(where)
        if address in self.software:
            raise EncodeError("there is already a software breakpoint at %#x" % address)
        with self._still():
            try:
                original = self.tracee.read(address, 1)[0]
            except LiveOSError:
                raise DecodeError("address %#x is not mapped in process %d" % (
                    address, self.tracee.pid)) from None
            bp = SoftwareBreakpoint(address, original, symbol)
            self.tracee.write(address, bytes([INT3]))
            bp.armed = True
            self.software[address] = bp
        return bp

    def add_guard(self, where: Address, access: str = "any", once: bool = False) -> GuardPage:
        """Guard the page holding the address.

        Args:
            access: "any" (reads, writes and execution fault) or "write"
                (the write right taken away: only writes fault).
            once: do not re-arm after the first hit (Windows PAGE_GUARD's way).

        Raises:
            DecodeError: a bad access, an address not mapped, or a write guard
                on a page that is not writable.
            EncodeError: the page is guarded already.
        """
        self._require_open()
        if access not in ("any", "write"):
            raise DecodeError("guard access %r must be 'any' or 'write'" % access)
        address, symbol = self.tracee.resolve(where)
        page = address & ~(self.tracee.page_size - 1)
        if page in self.guards:
            raise EncodeError("page %#x is already guarded" % page)
        guard = self._new_guard(address, page, access, once, symbol)
        with self._still():
            self._protect(page, guard.guarded_prot)
            guard.armed = True
            self.guards[page] = guard
        return guard

    def run(self, count: Optional[int] = None, timeout: Optional[float] = None) -> list:
        """events() as a list."""
        return list(self.events(count, timeout))

    def events(self, count: Optional[int] = None,
               timeout: Optional[float] = None) -> Iterator:  # pragma: no cover - per backend
        raise NotImplementedError

    # ---------------------------------------------------------- closing
    def close(self) -> CleanupReport:
        """Put back every byte, debug register and page protection; detach."""
        from . import signals
        if self._closed:
            return self.report
        with signals.restoring():
            report = self._cleanup()
        self.report = report
        self._forget_session()
        return report

    def wait_exit(self, give_up=None) -> Optional[ExitEvent]:
        """After close(), wait for a program the debugger started to end, as an
        ExitEvent (None when it was attached, or when ``give_up()``, asked
        every few milliseconds, said to stop waiting)."""
        status = self.wait(give_up)
        return None if status is None else self._exit_event(status)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        # A session dropped without close() must not leave 0xCC bytes behind.
        if not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):
                self.close()

    # ============================================================ shared internals
    def _require_open(self) -> None:
        if self._closed:
            raise KsinspectError("this debugging session is closed")
        if self._ended is not None:
            raise KsinspectError("the session ended: the process called %s" % self._ended)
        if not self.tracee.alive:
            raise NoSuchProcessError("process %d has exited" % self.tracee.pid)

    def _arm_thread(self, thread) -> None:
        """Give a thread (a new one too) the hardware breakpoints, keeping
        the debug registers it had for the close."""
        if not self.hardware:
            return
        if thread.saved_debugregs is None:
            thread.saved_debugregs = self._read_debugregs(thread)
        values = {bp.slot: bp.address for bp in self.hardware.values()}
        values[7] = self._dr7                        # last: the addresses are in place
        self._write_debugregs(thread, values)

    def _saved_values(self, thread) -> Dict[int, int]:
        """The debug registers to put back, DR7 first (so no slot is ever
        enabled with a foreign address), DR6 as "nothing happened" if it was 0."""
        saved = thread.saved_debugregs
        values = {7: saved[7]}
        values.update((n, saved[n]) for n in (0, 1, 2, 3))
        values[6] = saved[6] or DR6_CLEAR
        return values

    def _put_back_registers(self, thread) -> None:
        self._write_debugregs(thread, self._saved_values(thread))

    def _hardware_hits(self, tid: int, rip: int, dr6: DR6) -> List[HardwareHit]:
        """The hits of our slots that DR6 says fired (counted)."""
        hits = []
        for slot in dr6.hits:
            bp = self.hardware.get(slot)
            if bp is None:
                continue
            bp.hits += 1
            self.hits += 1
            old, new = watched_change(bp, self.tracee.read)
            hits.append(HardwareHit(tid, rip, self.tracee.describe(rip), slot, bp.address,
                                    bp.symbol, bp.condition.label, bp.length, dr6, old, new))
        return hits

    def _software_hit(self, tid: int, bp: SoftwareBreakpoint) -> SoftwareHit:
        bp.hits += 1
        self.hits += 1
        return SoftwareHit(tid, bp.address, bp.symbol or self.tracee.describe(bp.address),
                           bp.original, bp.hits)

    def _guard_hit(self, tid: int, rip: int, address: int, guard: GuardPage, how: str,
                   rearmed: bool, touch: Optional[str] = None) -> GuardHit:
        guard.hits += 1
        self.hits += 1
        return GuardHit(tid, rip, self.tracee.describe(rip), address,
                        self.tracee.describe(address) or guard.symbol, guard.page, guard.access,
                        how, rearmed, touch)

    def _cleanup(self) -> CleanupReport:
        tracee = self.tracee
        errors: List[str] = []
        restored_bytes = restored_threads = restored_pages = detached = 0

        def attempt(what: str, action) -> bool:
            try:
                action()
                return True
            except NoSuchProcessError:
                return False
            except (KsinspectError, OSError) as exc:
                errors.append("%s: %s" % (what, exc))
                return False

        if tracee.alive:
            self._quiesce(attempt)
        if tracee.alive and tracee.threads:
            for thread in list(tracee.threads.values()):
                if self._owes_registers(thread) and attempt(
                        "debug registers of thread %d" % thread.tid,
                        lambda t=thread: self._put_back_registers(t)) \
                        and thread.saved_debugregs is not None:
                    restored_threads += 1
            for bp in list(self.software.values()):
                if attempt("byte at %#x" % bp.address,
                           lambda b=bp: tracee.write(b.address, bytes([b.original]))):
                    restored_bytes += 1
            for guard in list(self.guards.values()):
                if self._guard_in_force(guard) and attempt("protection of page %#x" % guard.page,
                           lambda g=guard: self._protect(g.page, g.original_prot)):
                    restored_pages += 1
            kill = tracee.started and self.kill_on_close
            detached = self._let_go(attempt, kill)
            outcome = "killed" if kill else "detached, %s runs on" % (
                "the program" if tracee.started else "process %d" % tracee.pid)
        else:
            self._after_exit(attempt)
            outcome = "the process has exited"
        self._forget()
        self.software.clear()
        self.guards.clear()
        self.hardware.clear()
        tracee.threads.clear()
        return CleanupReport(tracee.pid, restored_bytes, restored_threads, restored_pages,
                             detached, outcome, tuple(errors))

    # ============================================================ what a backend supplies
    def _still(self):
        """A context manager inside which no thread of the process runs and
        no ending signal cuts in."""
        raise NotImplementedError

    def _read_debugregs(self, thread) -> Dict[int, int]:
        """DR0-DR3, DR6, DR7 of a thread, keyed by number."""
        raise NotImplementedError

    def _write_debugregs(self, thread, values: Dict[int, int]) -> None:
        """Write debug registers of a thread, in the order of ``values``."""
        raise NotImplementedError

    def _protect(self, page: int, prot: int) -> None:
        """Give one page the protection ``prot`` (the backend's own constants)."""
        raise NotImplementedError

    def _new_guard(self, address: int, page: int, access: str, once: bool,
                   symbol: Optional[str]) -> GuardPage:
        """The guard for the page (not armed yet), after checking the page
        can be guarded as asked."""
        raise NotImplementedError

    def _quiesce(self, attempt: Attempt) -> None:
        """At the close: stop every thread and settle what is in flight."""
        raise NotImplementedError

    def _owes_registers(self, thread) -> bool:
        """Whether the close must write this thread's registers back."""
        raise NotImplementedError

    def _guard_in_force(self, guard: GuardPage) -> bool:
        """Whether the close must write the page's protection back."""
        return guard.armed

    def _let_go(self, attempt: Attempt, kill: bool) -> int:
        """Detach (killing a started program first when ``kill``); the
        number of threads let go."""
        raise NotImplementedError

    def _after_exit(self, attempt: Attempt) -> None:
        """At the close of a session whose process has exited."""

    def _forget(self) -> None:
        """Last step of the close: release what the session held."""

    def _exit_event(self, status: int) -> ExitEvent:
        raise NotImplementedError

    def wait(self, give_up=None) -> Optional[int]:  # pragma: no cover - per backend
        raise NotImplementedError
