"""The breakpoint lab on Windows: the seed notes' debugger, through the Win32
debug API (ctypes over kernel32, :mod:`ksinspect.live.win32_api`).

The same :class:`Debugger` interface and event types as the ptrace lab
(:mod:`ksinspect.live.debugger`, :mod:`ksinspect.live.debug_events`), so a
script written for one runs on the other. How Windows does each thing:

* **Starting and attaching.** :meth:`Debugger.start` is CreateProcessW with
  DEBUG_ONLY_THIS_PROCESS; the debugger then receives CREATE_PROCESS,
  LOAD_DLL for ntdll, kernel32... and the loader's own initial breakpoint
  (EXCEPTION_BREAKPOINT in ntdll, before the program's entry point), where
  it holds the process: nothing runs while a debug event is not continued.
  :meth:`Debugger.attach` is OpenProcess + DebugActiveProcess (with
  DebugSetProcessKillOnExit(FALSE), so the program survives its debugger):
  Windows replays CREATE_PROCESS, CREATE_THREAD for each thread and LOAD_DLL
  for each module, then a thread it injects executes a breakpoint. Neither
  breakpoint is counted as a hit.
* **The loop.** WaitForDebugEvent / ContinueDebugEvent: DBG_CONTINUE for the
  events the debugger caused, DBG_EXCEPTION_NOT_HANDLED for an exception it
  did not cause (it goes back to the program's own handlers). The file
  handles CREATE_PROCESS and LOAD_DLL carry are closed.
* **Software breakpoint**: ReadProcessMemory keeps the byte, WriteProcessMemory
  writes 0xCC, FlushInstructionCache. EXCEPTION_BREAKPOINT at that address
  (Rip is one past the 0xCC): the byte goes back, Rip = the address, EFlags.TF
  set, and at the EXCEPTION_SINGLE_STEP that follows 0xCC is written again.
* **Hardware breakpoint**: DR0-DR3 and DR7 (encoded by
  :func:`ksinspect.x86.debugreg.encode_dr7`) written with SetThreadContext
  (CONTEXT_DEBUG_REGISTERS) into every thread, and into each new thread at
  its CREATE_THREAD event. A 32-bit program (WoW64) runs with the debug
  registers of its 32-bit context: they are read and written with
  Wow64GetThreadContext / Wow64SetThreadContext (WOW64_CONTEXT, whose Dr0-Dr7
  are DWORDs at offsets 4-24, winnt.h), as are its Eip and EFlags for the
  software and memory breakpoints; the exceptions a 32-bit program raises
  may come as STATUS_WX86_BREAKPOINT / STATUS_WX86_SINGLE_STEP (ntstatus.h),
  taken as EXCEPTION_BREAKPOINT / EXCEPTION_SINGLE_STEP. A hit is EXCEPTION_SINGLE_STEP with Dr6 saying
  the slot; Dr6 is then written back to 0xFFFF0FF0. An execute breakpoint is
  a fault: the thread resumes with EFlags.RF set so the same instruction does
  not fire again (SDM vol. 3B §17.3.1.1).
* **Memory breakpoint**: VirtualQueryEx (the MEMORY_BASIC_INFORMATION of the
  page, :mod:`ksinspect.windows.memory_info`), VirtualProtectEx adding
  PAGE_GUARD. The first access raises STATUS_GUARD_PAGE_VIOLATION (a first
  chance exception with the access kind and the address in its parameters)
  and the *system* removes PAGE_GUARD: the debugger single-steps the access
  and puts PAGE_GUARD back, unless ``once`` (PAGE_GUARD's own behaviour). A
  "write" guard takes the write right away instead (PAGE_READWRITE ->
  PAGE_READONLY): only writes fault, as EXCEPTION_ACCESS_VIOLATION. The page
  size is GetSystemInfo's dwPageSize.
* **Always restored**: :meth:`Debugger.close` suspends every thread, drains
  the events already queued (undoing our own: a thread that hit a 0xCC is
  put back on the instruction), writes back each thread's debug registers
  (and clears a trap flag we set), every byte and every page protection,
  then DebugActiveProcessStop; the threads are resumed after the detach. A
  program ksinspect started runs on unless ``kill_on_close``.

Addresses: a hex number, a symbol of the main program's COFF symbol table
(mingw keeps one; a 32-bit program's C names carry a leading underscore,
``_bump``, and are also known without it), or ``module!export`` read from the module's PE export
table in the target's memory (pefile).

Sources: Microsoft Learn "Creating a Basic Debugger" (the debugging events,
"Debugging Functions"), "ContinueDebugEvent", "DebugActiveProcess",
"DEBUG_EVENT", "Creating Guard Pages", "Memory Protection Constants",
"GetThreadContext"; Intel SDM vol. 3B chapter 17.
"""
import contextlib
import ntpath
import re
import struct
import subprocess
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from ..errors import (DecodeError, InvalidAddressError, KsinspectError, LiveOSError,
                      NoSuchProcessError, UnsupportedError)
from ..windows import debug_event as de
from ..windows import memory_info as mi
from ..windows.context import AMD64, X86, Context, ContextLayout
from ..windows.debug_event import DebugEvent, DebugEventCode
from ..windows.pe_symbols import coff_symbols
from ..x86.debugreg import DR6, Condition
from . import signals
from . import win32_api as w
from .debug_events import ExitEvent, SoftwareBreakpoint, WindowsGuardPage
from .debug_session import (DEBUG_REGISTERS, DR6_CLEAR, INT3, Address, Attempt, DebugSession,
                            check_attach, check_start, split_offset)

STATUS_WX86_SINGLE_STEP = 0x4000001E    # ntstatus.h: a WoW64 program's single step
# What a WoW64 program's own exceptions mean (ntstatus.h STATUS_WX86_*).
_WOW64_CODES = {de.STATUS_WX86_BREAKPOINT: de.EXCEPTION_BREAKPOINT,
                STATUS_WX86_SINGLE_STEP: de.EXCEPTION_SINGLE_STEP}
EFLAGS_TF = 1 << 8            # trap flag: single-step (SDM vol. 1 §3.4.3.3)
EFLAGS_RF = 1 << 16           # resume flag: no instruction breakpoint on the next one
_POLL_MS = 50                 # WaitForDebugEvent slice: Ctrl-C and timeouts stay responsive
_START_TIMEOUT = 30.0         # seconds for the start-up events up to the initial breakpoint
_DRAIN_MS = 30


class Registers:
    """A thread's registers as its process runs with them: the x64 CONTEXT
    (GetThreadContext / SetThreadContext), or, for a 32-bit program under
    WoW64, the WOW64_CONTEXT (Wow64GetThreadContext / Wow64SetThreadContext),
    whose Dr0-Dr7, Eip and EFlags are the ones its 32-bit code sees.

    Attributes:
        layout: the CONTEXT flavour (:data:`ksinspect.windows.context.AMD64` or ``X86``).
        control, debug, everything: its CONTEXT_CONTROL, CONTEXT_DEBUG_REGISTERS
            and CONTEXT_ALL flags.
        pointer: the name of its instruction pointer ("Rip" or "Eip").
    """

    def __init__(self, layout: ContextLayout, wow64: bool, control: int, debug: int,
                 everything: int):
        self.layout, self.wow64 = layout, wow64
        self.control, self.debug, self.everything = control, debug, everything
        self.pointer = layout.pointer
        self._members = {m.name: (m.offset, m.size) for m in layout.members}

    def get(self, handle: int, flags: int) -> bytearray:
        return w.get_context(handle, flags, wow64=self.wow64)

    def set(self, handle: int, ctx: bytearray, flags: int) -> None:
        """Write the context back, ContextFlags limited to what must be written."""
        ctx = bytearray(ctx)
        struct.pack_into("<I", ctx, self.layout.flags_offset, flags)
        w.set_context(handle, ctx, wow64=self.wow64)

    def value(self, ctx: bytearray, name: str) -> int:
        offset, size = self._members[name]
        return int.from_bytes(ctx[offset:offset + size], "little")

    def put(self, ctx: bytearray, name: str, value: int) -> None:
        offset, size = self._members[name]
        ctx[offset:offset + size] = (value & ((1 << 8 * size) - 1)).to_bytes(size, "little")

    def decode(self, ctx: bytearray) -> Context:
        return Context.from_bytes(bytes(ctx), wow64=self.wow64)


X64_REGISTERS = Registers(AMD64, False, w.CONTEXT_CONTROL, w.CONTEXT_DEBUG_REGISTERS,
                          w.CONTEXT_ALL)
WOW64_REGISTERS = Registers(X86, True, w.WOW64_CONTEXT_CONTROL, w.WOW64_CONTEXT_DEBUG_REGISTERS,
                            w.WOW64_CONTEXT_ALL)
_DECORATION = re.compile(r"^_([A-Za-z_.$?][A-Za-z0-9_.$?]*?)(@[0-9]+)?$")


@dataclass
class _Thread:
    tid: int
    handle: int
    owned: bool = False                  # a handle we opened (closed at the end)
    saved_debugregs: Optional[Dict[int, int]] = None
    steps: List[Tuple[str, object]] = field(default_factory=list)   # what a TF step finishes
    suspended: bool = False


@dataclass(frozen=True)
class Module:
    base: int
    name: str
    path: Optional[str]


class _TargetMemory:
    """``read``/``read_available`` over ReadProcessMemory, as the PE readers want."""

    def __init__(self, process: int):
        self.process = process

    def read(self, address: int, size: int) -> bytes:
        try:
            return w.read_memory(self.process, address, size)
        except LiveOSError as exc:
            raise InvalidAddressError(str(exc), address) from None

    def read_available(self, address: int, size: int):
        data = w.read_available(self.process, address, size)
        return data, None if len(data) == size else "unreadable"


class Tracee:
    """A debugged Windows process: its handle, threads, modules and symbols.

    Made by :meth:`Debugger.start` or :meth:`Debugger.attach`, not directly.
    """

    def __init__(self, pid: int, process: int, started: bool,
                 argv: Optional[Sequence[str]] = None):
        self.pid = pid
        self.process = process
        self.started = started
        self.argv = list(argv) if argv else None
        self.threads: Dict[int, _Thread] = {}
        self.modules: Dict[int, Module] = {}
        self.image_base: Optional[int] = None
        self.image_path: Optional[str] = None
        self.alive = True
        self.exit: Optional[ExitEvent] = None
        self.wow64 = w.is_wow64(process)
        self.registers = WOW64_REGISTERS if self.wow64 else X64_REGISTERS
        self._symbols: Optional[Dict[str, int]] = None
        self._sorted: Optional[List[Tuple[int, str]]] = None
        self._exports: Dict[int, Dict[str, int]] = {}
        self.page_size = w.page_size()

    # memory and registers
    def read(self, address: int, size: int) -> bytes:
        return w.read_memory(self.process, address, size)

    def write(self, address: int, data: bytes) -> None:
        w.write_memory(self.process, address, data)

    def region(self, address: int) -> mi.MemoryBasicInformation:
        """VirtualQueryEx of the region holding address, decoded."""
        raw = w.virtual_query(self.process, address)
        if raw is None:
            raise DecodeError("address %#x is beyond the address space of process %d"
                              % (address, self.pid))
        return mi.MemoryBasicInformation.decode(raw)

    def context(self, tid: Optional[int] = None) -> Context:
        """The thread's context as the program runs with it (the first
        thread's when tid is None), decoded: the x64 CONTEXT, or a WoW64
        program's WOW64_CONTEXT."""
        regs = self.registers
        return regs.decode(regs.get(self._thread(tid).handle, regs.everything))

    def debugreg(self, n: int, tid: Optional[int] = None) -> int:
        regs = self.registers
        return regs.value(regs.get(self._thread(tid).handle, regs.debug), "Dr%d" % n)

    def _thread(self, tid: Optional[int]) -> _Thread:
        if tid is None:
            return next(iter(self.threads.values()))
        try:
            return self.threads[tid]
        except KeyError:
            raise NoSuchProcessError("thread %d is not a thread of process %d"
                                     % (tid, self.pid)) from None

    # symbols
    @property
    def symbols(self) -> Dict[str, int]:
        """name -> address of the main program's COFF symbols (empty without any)."""
        if self._symbols is None:
            self._symbols = {}
            if self.image_base is not None:
                data = b""
                with contextlib.suppress(OSError):
                    with open(self.image_path or "", "rb") as fh:
                        data = fh.read(256 << 20)
                if data:
                    with contextlib.suppress(DecodeError, IndexError, ValueError):
                        self._symbols = {n: self.image_base + rva
                                         for n, rva in coff_symbols(data).items()}
                if self.wow64:
                    # x86 C names are decorated (_name, stdcall _name@8): known both ways.
                    for name, address in list(self._symbols.items()):
                        plain = _DECORATION.match(name)
                        if plain:
                            self._symbols.setdefault(plain.group(1), address)
            self._sorted = sorted((a, n) for n, a in self._symbols.items())
        return self._symbols

    def has_symbol(self, name: str) -> bool:
        """A name resolve() knows: a main-program symbol, or module!export syntax."""
        return "!" in name or name.partition("+")[0].strip() in self.symbols

    def module_named(self, name: str) -> Module:
        wanted = name.lower()
        for module in self.modules.values():
            stem = module.name.lower()
            if wanted in (stem, stem.rsplit(".", 1)[0]):
                return module
        raise DecodeError("process %d has no module %r loaded (it has: %s)" % (
            self.pid, name, ", ".join(sorted(m.name for m in self.modules.values()))))

    def exports(self, module: Module) -> Dict[str, int]:
        """The module's export table, read from the target's memory (pefile)."""
        if module.base not in self._exports:
            from ..windows.kernel import read_kernel_image
            image = read_kernel_image(_TargetMemory(self.process), module.base)
            self._exports[module.base] = dict(image.exports)
        return self._exports[module.base]

    def resolve(self, where: Address) -> Tuple[int, Optional[str]]:
        """An address, a main-program symbol (``name``, ``name+0x10``) or
        ``module!export`` (``kernel32!Sleep``).

        Raises:
            DecodeError: an unknown module, export or symbol.
        """
        if isinstance(where, int):
            return where, self.describe(where)
        text = where.strip()
        base_text, offset = split_offset(text)
        if "!" in base_text:
            module_name, _, export = base_text.partition("!")
            module = self.module_named(module_name.strip())
            table = self.exports(module)
            if export.strip() not in table:
                raise DecodeError("%s does not export %r" % (module.name, export.strip()))
            return module.base + table[export.strip()] + offset, text
        name = base_text.strip()
        if name not in self.symbols:
            raise DecodeError("%r is not a symbol of %s (its COFF symbol table%s)" % (
                name, ntpath.basename(self.image_path or "the program"),
                "" if self.symbols else " is empty or missing"))
        return self.symbols[name] + offset, text

    def describe(self, address: int) -> Optional[str]:
        """name+0xN for an address in the main program, module+0xN in a module."""
        self.symbols
        if self._sorted:
            i = bisect_right(self._sorted, (address, "\uffff")) - 1
            if i >= 0:
                start, name = self._sorted[i]
                if address - start < 0x10000:
                    return name if address == start else "%s+%#x" % (name, address - start)
        best = None
        for module in self.modules.values():
            if module.base <= address and (best is None or module.base > best.base):
                best = module
        if best is not None and address - best.base < 64 << 20:
            return "%s+%#x" % (best.name, address - best.base)
        return None


def _file_name(handle: int) -> Optional[str]:
    """The path of an open file handle (GetFinalPathNameByHandleW), for the
    image names Wine leaves out of CREATE_PROCESS / LOAD_DLL."""
    return w.final_path(handle)


class Debugger(DebugSession):
    """A breakpoint session on one Windows process (see the module docstring).

    Example::

        with Debugger.start(["win_calls.exe", "5", "0"]) as dbg:   # tests/programs/win_calls.c
            dbg.add_hardware("counter", "write", 4)
            dbg.add_software("bump")
            dbg.add_guard("page")
            for event in dbg.events(count=10, timeout=5):
                print(event)
        print(dbg.report)

    Args (of the constructors):
        kill_on_close: for a program the debugger started, terminate it at
            the end instead of letting it run on.
        debug_events: also yield every DEBUG_EVENT, decoded
            (:class:`~ksinspect.windows.debug_event.DebugEvent`), the start-up
            ones first.
    """

    def __init__(self, tracee: Tracee, kill_on_close: bool = False, debug_events: bool = False):
        super().__init__(tracee, kill_on_close)
        self.debug_events = debug_events
        self.startup: List[DebugEvent] = []    # the events up to the initial breakpoint
        self._replayed = False
        self._held: Optional[DebugEvent] = None
        self._held_status = w.DBG_CONTINUE
        self._initial_breakpoint_seen = False
        self._wow64_breakpoint_seen = False    # the 32-bit loader's own (Windows' WoW64)

    # ---------------------------------------------------------- starting
    @classmethod
    def start(cls, argv: Sequence[str], kill_on_close: bool = False, stdin=None, stdout=None,
              stderr=None, debug_events: bool = False) -> "Debugger":
        """CreateProcessW(DEBUG_ONLY_THIS_PROCESS), then the start-up events up
        to the loader's initial breakpoint, where the process is held.

        stdin/stdout/stderr: file objects or C runtime descriptors for the program.
        """
        check_start(w.unavailable_reason(), argv)
        import msvcrt
        handles = []
        for stream in (stdin, stdout, stderr):
            if stream is None:
                handles.append(None)
                continue
            fd = stream if isinstance(stream, int) else stream.fileno()
            handles.append(msvcrt.get_osfhandle(fd))
        line = subprocess.list2cmdline(list(argv))
        try:
            process, thread, pid, tid = w.create_process(line, w.DEBUG_ONLY_THIS_PROCESS,
                                                         tuple(handles))
        except LiveOSError as exc:
            code = getattr(exc, "winerror_code", 0)
            if code in (w.ERROR_FILE_NOT_FOUND, w.ERROR_PATH_NOT_FOUND):
                raise NoSuchProcessError("cannot run %s: %s" % (
                    argv[0], "No such file or directory"), code) from None
            raise
        w.close_handle(thread)
        w.api().DebugSetProcessKillOnExit(False)
        tracee = Tracee(pid, process, True, argv)
        dbg = cls(tracee, kill_on_close, debug_events)
        try:
            dbg._run_to_initial_breakpoint("the loader's initial breakpoint")
        except BaseException:
            with contextlib.suppress(Exception):
                w.api().TerminateProcess(process, 1)
            raise
        return dbg

    @classmethod
    def attach(cls, pid: int, debug_events: bool = False) -> "Debugger":
        """OpenProcess + DebugActiveProcess; held at the break-in breakpoint."""
        check_attach(w.unavailable_reason(), pid, w.api_current_pid(), "debug")
        process = w.open_process(pid)
        try:
            if w.debugger_present(process):
                raise LiveOSError(w.ERROR_ACCESS_DENIED,
                                  "process %d is already being debugged (a process has one "
                                  "debugger at a time)" % pid)
            if not w.api().DebugActiveProcess(pid):
                code = w.last_error()
                raise w.fail("DebugActiveProcess", "process %d" % pid, code)
        except BaseException:
            w.close_handle(process)
            raise
        w.api().DebugSetProcessKillOnExit(False)
        tracee = Tracee(pid, process, False)
        dbg = cls(tracee, False, debug_events)
        try:
            dbg._run_to_initial_breakpoint("the break-in breakpoint of DebugActiveProcess")
        except BaseException:
            with contextlib.suppress(Exception):
                w.api().DebugActiveProcessStop(pid)
            raise
        return dbg

    def _run_to_initial_breakpoint(self, note: str) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            with signals.critical():
                self._continue_held()
                raw = w.wait_for_debug_event(_POLL_MS)
                event = None if raw is None else self._decode(raw)
                if event is not None:
                    self._hold(event, w.DBG_CONTINUE)
            if event is None:
                if time.monotonic() > deadline:
                    raise LiveOSError(0, "process %d: no initial breakpoint within %.0f s"
                                      % (self.tracee.pid, _START_TIMEOUT))
                continue
            info = event.info
            if (event.code == DebugEventCode.EXCEPTION_DEBUG_EVENT
                    and info.code == de.EXCEPTION_BREAKPOINT):
                self._initial_breakpoint_seen = True
                event = event.with_note(note)
                self._hold(event, w.DBG_CONTINUE)
                self.startup.append(event)
                return
            with signals.critical():
                produced = self._handle(event)
            self.startup += [e for e in produced if isinstance(e, DebugEvent)]
            if not self.tracee.alive:
                self._continue_held()
                raise NoSuchProcessError("process %d exited before its initial breakpoint"
                                         % self.tracee.pid)

    # ---------------------------------------------------------- running
    def events(self, count: Optional[int] = None, timeout: Optional[float] = None) -> Iterator:
        """Run the process and yield events until count breakpoint hits, the
        timeout (seconds), or its end. The last event stays held (the
        process frozen) while the caller looks at it."""
        self._require_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        start_hits = self.hits
        if self.debug_events and not self._replayed:
            self._replayed = True
            yield from self.startup
        while self.tracee.alive:
            if count is not None and self.hits - start_hits >= count:
                return
            with signals.critical():
                self._continue_held()
            wait_ms = _POLL_MS
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                wait_ms = max(1, min(_POLL_MS, int(left * 1000)))
            # Taking an event and holding it is one step: a Ctrl-C between the
            # two would lose an event whose thread waits at a 0xCC for us.
            with signals.critical():
                raw = w.wait_for_debug_event(wait_ms)
                if raw is None:
                    continue
                produced = self._handle(self._decode(raw))
            for event in produced:
                yield event

    def thread_contexts(self) -> Dict[int, Context]:
        """Every thread's context as the program runs with it (a WoW64
        program's WOW64_CONTEXT), decoded (the process frozen meanwhile)."""
        regs = self.tracee.registers
        with self._frozen():
            return {tid: regs.decode(regs.get(t.handle, regs.everything))
                    for tid, t in self.tracee.threads.items()}

    def wait(self, give_up=None) -> Optional[int]:
        """After close(), wait for a program the debugger started to end; its
        exit code (None when attached, or when ``give_up()`` said to stop)."""
        if not self._closed:
            raise KsinspectError("close() the session before waiting for the program")
        if not self.tracee.started or self.tracee.exit is not None:
            return None
        while True:
            if w.wait_process(self.tracee.process, 50):
                return w.exit_code(self.tracee.process)
            if give_up is not None and give_up():
                return None

    def _exit_event(self, status: int) -> ExitEvent:
        return ExitEvent(self.tracee.pid, status, None)

    # ============================================================ internals

    def _decode(self, raw: bytes) -> DebugEvent:
        return DebugEvent.decode(raw, self._reader)

    def _reader(self, address: int, size: int) -> bytes:
        return w.read_memory(self.tracee.process, address, size)

    def _hold(self, event: DebugEvent, status: int) -> None:
        self._held, self._held_status = event, status

    def _continue_held(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            w.continue_debug_event(held.pid, held.tid, self._held_status)

    @contextlib.contextmanager
    def _frozen(self):
        """The process cannot run inside: either an event is held, or every
        thread is suspended for the block."""
        if self._held is not None or not self.tracee.alive:
            yield
            return
        suspended = []
        try:
            for thread in self.tracee.threads.values():
                with contextlib.suppress(LiveOSError):
                    w.suspend_thread(thread.handle)
                    suspended.append(thread)
            yield
        finally:
            for thread in suspended:
                with contextlib.suppress(LiveOSError):
                    w.resume_thread(thread.handle)

    # ------------------------------------------- the primitives of the shared session
    @contextlib.contextmanager
    def _still(self):
        with signals.critical(), self._frozen():
            yield

    def _read_debugregs(self, thread: _Thread) -> Dict[int, int]:
        regs = self.tracee.registers
        ctx = regs.get(thread.handle, regs.debug)
        return {n: regs.value(ctx, "Dr%d" % n) for n in DEBUG_REGISTERS}

    def _write_debugregs(self, thread: _Thread, values: Dict[int, int]) -> None:
        regs = self.tracee.registers
        ctx = regs.get(thread.handle, regs.debug)
        for n, value in values.items():
            regs.put(ctx, "Dr%d" % n, value)
        regs.set(thread.handle, ctx, regs.debug)        # all of them in one call

    def _protect(self, page: int, prot: int) -> None:
        w.virtual_protect(self.tracee.process, page, self.tracee.page_size, prot)

    def _new_guard(self, address: int, page: int, access: str, once: bool,
                   symbol: Optional[str]) -> WindowsGuardPage:
        region = self.tracee.region(address)
        if not region.committed:
            raise DecodeError("address %#x is not mapped in process %d (%s)" % (
                address, self.tracee.pid, str(region)))
        guard = WindowsGuardPage(address, page, region.protect, access, once, symbol)
        guard.guarded_prot                    # refuses a write guard on a read-only page
        return guard

    def _add_thread(self, tid: int, handle: int) -> _Thread:
        thread = self.tracee.threads.get(tid)
        if thread is None:
            thread = self.tracee.threads[tid] = _Thread(tid, handle)
        return thread

    def _handle(self, event: DebugEvent) -> list:
        """Deal with one debug event; it stays held until the next one is asked for."""
        tracee = self.tracee
        code = event.code
        self._hold(event, w.DBG_CONTINUE)
        shown: List = []
        if code == DebugEventCode.CREATE_PROCESS_DEBUG_EVENT:
            info = event.info
            name = info.image_name or _file_name(info.file)
            w.close_handle(info.file)
            tracee.image_base = info.image_base
            tracee.image_path = name
            tracee._symbols = None
            self._add_thread(event.tid, info.thread)
            tracee.modules[info.image_base] = Module(info.image_base,
                                                     ntpath.basename(name or "program.exe"), name)
            event = _renamed(event, name)
        elif code == DebugEventCode.CREATE_THREAD_DEBUG_EVENT:
            thread = self._add_thread(event.tid, event.info.thread)
            self._arm_thread(thread)
        elif code == DebugEventCode.EXIT_THREAD_DEBUG_EVENT:
            tracee.threads.pop(event.tid, None)
        elif code == DebugEventCode.EXIT_PROCESS_DEBUG_EVENT:
            tracee.alive = False
            tracee.exit = ExitEvent(tracee.pid, event.info.exit_code, None)
            tracee.threads.clear()
            return ([event] if self.debug_events else []) + [tracee.exit]
        elif code == DebugEventCode.LOAD_DLL_DEBUG_EVENT:
            info = event.info
            name = info.image_name or _file_name(info.file)
            w.close_handle(info.file)
            tracee.modules[info.base] = Module(info.base, ntpath.basename(name or "?"), name)
            event = _renamed(event, name)
        elif code == DebugEventCode.UNLOAD_DLL_DEBUG_EVENT:
            tracee.modules.pop(event.info.base, None)
            tracee._exports.pop(event.info.base, None)
        elif code == DebugEventCode.EXCEPTION_DEBUG_EVENT:
            return self._on_exception(event)
        if self.debug_events:
            shown.append(event)
        return shown

    def _code(self, info) -> int:
        """The exception code, a WoW64 program's STATUS_WX86_* taken as the native one."""
        return _WOW64_CODES.get(info.code, info.code) if self.tracee.wow64 else info.code

    def _on_exception(self, event: DebugEvent) -> list:
        info = event.info
        code = self._code(info)
        thread = self.tracee.threads.get(event.tid)
        if thread is None:
            thread = self._add_thread(event.tid, w.open_thread(event.tid))
            thread.owned = True
        produced: List = []
        if code == de.EXCEPTION_BREAKPOINT and info.address in self.software:
            produced = self._on_int3(thread, self.software[info.address])
        elif code == de.EXCEPTION_SINGLE_STEP:
            produced = self._on_single_step(thread, info)
        elif code == de.STATUS_GUARD_PAGE_VIOLATION and self._our_guard(info, "any"):
            produced = self._on_guard(thread, info)
        elif code == de.EXCEPTION_ACCESS_VIOLATION and self._our_guard(info, "write"):
            produced = self._on_guard(thread, info)
        elif code == de.EXCEPTION_BREAKPOINT and not self._initial_breakpoint_seen:
            self._initial_breakpoint_seen = True
            event = event.with_note("the loader's initial breakpoint, not a user hit")
        elif info.code == de.STATUS_WX86_BREAKPOINT and not self._wow64_breakpoint_seen:
            # Windows' WoW64 stops a 32-bit program twice: the 64-bit loader's
            # breakpoint, then its 32-bit loader's own.
            self._wow64_breakpoint_seen = True
            event = event.with_note("the 32-bit loader's initial breakpoint, not a user hit")
        elif info.code == de.DBG_CONTROL_C and self.tracee.started:
            # Ctrl-C reached the program too: it is the session's, not the program's.
            raise KeyboardInterrupt
        else:
            self._held_status = w.DBG_EXCEPTION_NOT_HANDLED
            event = event.with_note("not ours: passed to the program")
        if produced:
            return ([event] if self.debug_events else []) + produced
        if self.debug_events or self._held_status == w.DBG_EXCEPTION_NOT_HANDLED:
            return [event]
        return []

    def _our_guard(self, info, access: str) -> bool:
        if info.data_address is None:
            return False
        guard = self.guards.get(info.data_address & ~(self.tracee.page_size - 1))
        if guard is None or guard.access != access or not guard.armed:
            return False
        return access == "any" or info.access == "write"

    def _on_int3(self, thread: _Thread, bp: SoftwareBreakpoint) -> list:
        regs = self.tracee.registers
        ctx = regs.get(thread.handle, regs.control)
        hit = self._software_hit(thread.tid, bp)
        # The classic cycle: byte back, Rip back by one, one step, 0xCC again.
        if bp.armed:
            self.tracee.write(bp.address, bytes([bp.original]))
            bp.armed = False
            regs.put(ctx, "EFlags", regs.value(ctx, "EFlags") | EFLAGS_TF)
            thread.steps.append(("sw", bp))
        regs.put(ctx, regs.pointer, bp.address)
        regs.set(thread.handle, ctx, regs.control)
        return [hit]

    def _on_guard(self, thread: _Thread, info) -> list:
        guard = self.guards[info.data_address & ~(self.tracee.page_size - 1)]
        guard.armed = False
        if guard.access == "write":           # our protection is still on: take it off
            self._protect(guard.page, guard.original_prot)
        # (PAGE_GUARD was removed by the system itself when it raised the exception.)
        rearm = not guard.once
        if rearm:
            regs = self.tracee.registers
            ctx = regs.get(thread.handle, regs.control)
            regs.put(ctx, "EFlags", regs.value(ctx, "EFlags") | EFLAGS_TF)
            regs.set(thread.handle, ctx, regs.control)
            thread.steps.append(("guard", guard))
        else:
            del self.guards[guard.page]
        return [self._guard_hit(thread.tid, info.address, info.data_address, guard, info.name,
                                rearm, info.access)]

    def _on_single_step(self, thread: _Thread, info) -> list:
        regs = self.tracee.registers
        ctx = regs.get(thread.handle, regs.control | regs.debug)
        dr6 = DR6(regs.value(ctx, "Dr6"))
        eflags = regs.value(ctx, "EFlags")
        events: List = self._hardware_hits(thread.tid, regs.value(ctx, regs.pointer), dr6)
        if any(self.hardware[h.slot].condition is Condition.EXECUTE for h in events):
            eflags |= EFLAGS_RF              # a fault: do not fire again on resume
        stepped = bool(thread.steps) and (dr6.bs or not dr6.hits)
        if stepped:
            for kind, what in thread.steps:
                if kind == "sw" and what.address in self.software and self.tracee.alive:
                    self.tracee.write(what.address, bytes([INT3]))
                    what.armed = True
                elif kind == "guard" and what.page in self.guards:
                    self._protect(what.page, what.guarded_prot)
                    what.armed = True
            thread.steps.clear()
        if not events and not stepped:
            # The program's own trap flag or debug registers: its business.
            self._held_status = w.DBG_EXCEPTION_NOT_HANDLED
            return []
        regs.put(ctx, "Dr6", DR6_CLEAR)
        flags = regs.debug
        if eflags != regs.value(ctx, "EFlags"):
            # Only when RF must be set: under Wine a CONTEXT_CONTROL write makes
            # the thread leave its exception the slow way (about 10 ms a hit).
            regs.put(ctx, "EFlags", eflags)
            flags |= regs.control
        regs.set(thread.handle, ctx, flags)
        return events

    def _undo(self, event: DebugEvent) -> None:
        """An event that was already queued when the session ended: undo what
        is ours so the program sees nothing of it."""
        info = event.info
        self._hold(event, w.DBG_CONTINUE)
        if event.code == DebugEventCode.EXIT_PROCESS_DEBUG_EVENT:
            self.tracee.alive = False
            self.tracee.exit = ExitEvent(self.tracee.pid, info.exit_code, None)
        elif event.code in (DebugEventCode.CREATE_PROCESS_DEBUG_EVENT,
                            DebugEventCode.LOAD_DLL_DEBUG_EVENT):
            w.close_handle(info.file)
        elif event.code == DebugEventCode.CREATE_THREAD_DEBUG_EVENT:
            thread = self._add_thread(event.tid, info.thread)
            self._arm_thread(thread)                   # so its saved registers are known
            with contextlib.suppress(LiveOSError):
                w.suspend_thread(thread.handle)
                thread.suspended = True
        elif event.code == DebugEventCode.EXIT_THREAD_DEBUG_EVENT:
            self.tracee.threads.pop(event.tid, None)
        elif event.code == DebugEventCode.EXCEPTION_DEBUG_EVENT:
            thread = self.tracee.threads.get(event.tid)
            code = self._code(info)
            if code == de.EXCEPTION_BREAKPOINT and info.address in self.software and thread:
                regs = self.tracee.registers
                ctx = regs.get(thread.handle, regs.control)
                regs.put(ctx, regs.pointer, info.address)   # re-executes the restored byte
                regs.set(thread.handle, ctx, regs.control)
            elif code == de.EXCEPTION_SINGLE_STEP and thread:
                thread.steps.clear()
            elif code == de.STATUS_GUARD_PAGE_VIOLATION and self._our_guard(info, "any"):
                pass                                 # the access repeats, unguarded
            elif code == de.EXCEPTION_ACCESS_VIOLATION and self._our_guard(info, "write"):
                pass                                 # the protection is put back below
            elif code == de.EXCEPTION_BREAKPOINT and not self._initial_breakpoint_seen:
                self._initial_breakpoint_seen = True
            elif info.code == de.STATUS_WX86_BREAKPOINT and not self._wow64_breakpoint_seen:
                self._wow64_breakpoint_seen = True
            else:
                self._held_status = w.DBG_EXCEPTION_NOT_HANDLED

    def _quiesce(self, attempt: Attempt) -> None:
        tracee = self.tracee
        for thread in list(tracee.threads.values()):
            if attempt("suspending thread %d" % thread.tid,
                       lambda t=thread: w.suspend_thread(t.handle)):
                thread.suspended = True
        attempt("continuing the last event", self._continue_held)
        # Events already queued (another thread hit a breakpoint meanwhile).
        while tracee.alive:
            raw = w.wait_for_debug_event(_DRAIN_MS)
            if raw is None:
                break
            attempt("an event queued at the end", lambda r=raw: self._undo(self._decode(r)))
            attempt("continuing a queued event", self._continue_held)

    def _owes_registers(self, thread: _Thread) -> bool:
        return thread.saved_debugregs is not None or bool(thread.steps)

    def _put_back_registers(self, thread: _Thread) -> None:
        """The saved debug registers, and a trap flag we set whose step never
        came cleared, in one SetThreadContext."""
        regs = self.tracee.registers
        flags = regs.control | regs.debug
        ctx = regs.get(thread.handle, flags)
        if thread.saved_debugregs is not None:
            for n, value in self._saved_values(thread).items():
                regs.put(ctx, "Dr%d" % n, value)
        if thread.steps:
            regs.put(ctx, "EFlags", regs.value(ctx, "EFlags") & ~EFLAGS_TF)
            thread.steps.clear()
        regs.set(thread.handle, ctx, flags)

    def _guard_in_force(self, guard) -> bool:
        # Armed, or waiting for the step that re-arms it: its protection is
        # written back either way.
        return True

    def _let_go(self, attempt: Attempt, kill: bool) -> int:
        tracee = self.tracee
        detached = 0
        if kill:
            attempt("terminating the program", lambda: w.check(
                w.api().TerminateProcess(tracee.process, 1), "TerminateProcess", ""))
        if attempt("DebugActiveProcessStop", lambda: w.check(
                w.api().DebugActiveProcessStop(tracee.pid), "DebugActiveProcessStop",
                "process %d" % tracee.pid)):
            detached = len(tracee.threads)
        for thread in list(tracee.threads.values()):
            if thread.suspended:
                with contextlib.suppress(LiveOSError):
                    w.resume_thread(thread.handle)
                thread.suspended = False
        return detached

    def _after_exit(self, attempt: Attempt) -> None:
        attempt("continuing the last event", self._continue_held)
        with contextlib.suppress(Exception):
            w.api().DebugActiveProcessStop(self.tracee.pid)

    def _forget(self) -> None:
        for thread in self.tracee.threads.values():
            if thread.owned:
                w.close_handle(thread.handle)


def _renamed(event: DebugEvent, name: Optional[str]) -> DebugEvent:
    """The event with the image name filled from its file handle when Wine left it out."""
    info = event.info
    if name is None or info.image_name is not None:
        return event
    import dataclasses
    info = dataclasses.replace(info, image_name=name)
    return DebugEvent(event.code, event.pid, event.tid, info, event.raw,
                      event.note or "image name from the file handle")


def thread_contexts(pid: int) -> List[Tuple[int, Context, Optional[Context]]]:
    """Every thread of process pid (Toolhelp32) with its CONTEXT decoded (and,
    for a WoW64 process, its 32-bit WOW64_CONTEXT); each thread is suspended
    for the read (OpenThread, SuspendThread, GetThreadContext, ResumeThread).

    Raises:
        NoSuchProcessError: no such process.
    """
    reason = w.unavailable_reason()
    if reason:
        raise UnsupportedError(reason)
    process = w.open_process(pid)
    try:
        wow64 = w.is_wow64(process)
    finally:
        w.close_handle(process)
    out = []
    for tid in w.snapshot_threads(pid):
        try:
            handle = w.open_thread(tid)
        except LiveOSError:
            continue                                  # exited meanwhile
        try:
            w.suspend_thread(handle)
            try:
                ctx = Context.from_bytes(bytes(w.get_context(handle, w.CONTEXT_ALL)))
                ctx32 = None
                if wow64:
                    ctx32 = Context.from_bytes(bytes(w.get_context(
                        handle, w.WOW64_CONTEXT_ALL, wow64=True)), wow64=True)
            finally:
                w.resume_thread(handle)
        finally:
            w.close_handle(handle)
        out.append((tid, ctx, ctx32))
    return out
