"""A process as a Windows minidump holds it: threads with decoded CONTEXTs, the
TEB and PEB read from the dump's memory, and the PEB checked against the
dump's own streams.

``memory`` is what :func:`ksinspect.memory.open_image` returns for a ``.dmp``
(``memory.container`` is the parsed
:class:`~ksinspect.memory.minidump.MinidumpLayout`; ``memory.read(va, n)``
reads the process's virtual memory). What WinDbg shows with ``~``, ``r``,
``!teb``, ``!peb`` and ``lm``:

* the layout of the PEB/TEB is chosen from the SystemInfo stream's
  MajorVersion.MinorVersion.BuildNumber (no ``--layout`` needed);
* the PEB is the first thread's ``TEB.ProcessEnvironmentBlock``;
* the checks put the loader lists beside the ModuleList stream (written by
  dbghelp from its own module snapshot) and ImagePathName beside the main
  module's name: a spoofed image path or a module unlinked from the lists
  shows as a disagreement.

A dump without full memory (``winedbg --minidump``, MiniDumpNormal) holds
stacks and a few small ranges: there the TEB or PEB is not in the dump, and
the error says so.
"""
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

from ..errors import DecodeError, ImageFormatError, InvalidAddressError, KsinspectError
from ..views.html import html_pre
from ..memory.minidump import DumpModule, DumpThread, MinidumpLayout, stored_bytes
from .checks import Check
from .context import Context
from .layout import Layout
from .layout_files import choose_layout, load_layout
from .peb import MAX_MODULES, Peb, Teb, read_peb, read_teb

NOT_FULL = ("a dump without full memory (winedbg --minidump, MiniDumpNormal) holds only "
            "stacks and small ranges")


def dump_of(memory: Any) -> MinidumpLayout:
    """The parsed minidump behind ``memory``.

    Raises:
        ImageFormatError: ``memory`` is not a minidump.
    """
    dump = getattr(memory, "container", None)
    if not isinstance(dump, MinidumpLayout):
        raise ImageFormatError("%s is a %s image, not a Windows minidump" % (
            getattr(memory, "name", "the image"), getattr(memory, "format", "memory")))
    return dump


def dump_arch(memory: Any) -> str:
    """``"x64"`` or ``"x86"`` from the SystemInfo stream.

    Raises:
        DecodeError: no SystemInfo stream, or an architecture other than x86/x64.
    """
    info = dump_of(memory).system_info
    if info is None:
        raise DecodeError("%s: the minidump has no SystemInfo stream, so its architecture "
                          "is unknown" % memory.name)
    if info.arch not in ("x64", "x86"):
        raise DecodeError("%s: the minidump is of a %s process; ksinspect decodes x86 and x64"
                          % (memory.name, info.arch))
    return info.arch


@dataclass(frozen=True)
class ThreadState:
    """One thread of the dump: MINIDUMP_THREAD and its decoded CONTEXT.

    ``context`` is None when its bytes cannot be decoded; ``problem`` then
    says why (a CONTEXT shorter than its flags claim...).
    """

    thread: DumpThread
    context: Optional[Context]
    problem: Optional[str]
    exception: bool = False      # the thread the exception stream names

    @property
    def thread_id(self) -> int:
        return self.thread.thread_id

    @property
    def teb(self) -> int:
        return self.thread.teb

    def __str__(self) -> str:
        text = "thread %d: TEB %#x, stack %#x-%#x" % (
            self.thread_id, self.teb, self.thread.stack_start,
            self.thread.stack_start + self.thread.stack_size)
        if self.context is not None:
            text += "; " + str(self.context)
        elif self.problem:
            text += "; CONTEXT: " + self.problem
        return text + (" [exception thread]" if self.exception else "")

    def to_dict(self) -> dict:
        d = self.thread.to_dict()
        d["exception_thread"] = self.exception
        d["context"] = None if self.context is None else self.context.to_dict()
        d["problem"] = self.problem
        return d

    def explain(self) -> str:
        lines = [str(self)]
        if self.context is not None:
            lines += ["", self.context.explain()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return html_pre(self.explain())


def _context(memory: Any, size: int, rva: int, wow64: bool, what: str) -> Tuple[
        Optional[Context], Optional[str]]:
    if not size:
        return None, "%s has no CONTEXT in the dump" % what
    try:
        return Context.from_bytes(stored_bytes(memory, rva, size), wow64=wow64), None
    except KsinspectError as exc:
        return None, "%s: %s" % (what, exc)


def dump_threads(memory: Any) -> List[ThreadState]:
    """Every thread of the ThreadList stream with its CONTEXT decoded."""
    dump = dump_of(memory)
    wow64 = dump_arch(memory) == "x86"
    exc_tid = dump.exception.thread_id if dump.exception is not None else None
    out = []
    for t in dump.threads:
        context, problem = _context(memory, t.context_size, t.context_rva, wow64,
                                    "thread %d" % t.thread_id)
        out.append(ThreadState(t, context, problem, t.thread_id == exc_tid))
    return out


def exception_context(memory: Any) -> Optional[Context]:
    """The CONTEXT the exception stream points to (the state at the exception).

    Raises:
        TruncatedDataError: that CONTEXT is shorter than its flags claim.
    """
    dump = dump_of(memory)
    e = dump.exception
    if e is None or not e.context_size:
        return None
    return Context.from_bytes(stored_bytes(memory, e.context_rva, e.context_size),
                              wow64=dump_arch(memory) == "x86")


def dump_layout(memory: Any, layout: Any = None) -> Tuple[Layout, str]:
    """The structure layout for the dump's Windows build, and a note saying why.

    Raises:
        DecodeError: no SystemInfo stream, or an architecture without layouts.
    """
    if layout is not None:
        chosen = load_layout(layout)
        return chosen, "layout %s as given" % chosen.name
    arch = dump_arch(memory)
    info = dump_of(memory).system_info
    return choose_layout(info.major_version, info.minor_version, info.build_number, arch,
                         "the dump's SystemInfo version")


def _first_thread(memory: Any, thread_id: Optional[int]) -> DumpThread:
    dump = dump_of(memory)
    if not dump.threads:
        raise DecodeError("%s: the minidump has no threads, so no TEB to start from"
                          % memory.name)
    if thread_id is None:
        return dump.threads[0]
    for t in dump.threads:
        if t.thread_id == thread_id:
            return t
    raise DecodeError("%s: no thread %d in the dump (threads: %s)" % (
        memory.name, thread_id, ", ".join(str(t.thread_id) for t in dump.threads)))


def dump_teb(memory: Any, thread_id: Optional[int] = None, layout: Any = None) -> Teb:
    """The TEB of a thread (default the first), read from the dump's memory.

    Raises:
        InvalidAddressError: the TEB is not in the dump (the message says why).
    """
    chosen, note = dump_layout(memory, layout)
    t = _first_thread(memory, thread_id)
    if not memory.contains(t.teb, 0x40):
        raise InvalidAddressError("%s: the TEB of thread %d at %#x is not in the dump (%s)"
                                  % (memory.name, t.thread_id, t.teb, NOT_FULL), address=t.teb)
    teb = read_teb(memory, t.teb, chosen)
    from dataclasses import replace
    return replace(teb, notes=teb.notes + ("TEB %#x of thread %d from the dump's ThreadList"
                                           % (t.teb, t.thread_id), note))


def module_checks(peb: Peb, modules: List[DumpModule]) -> List[Check]:
    """The PEB's loader lists and image path beside the dump's ModuleList stream."""
    by_base = {m.base: m for m in modules}
    listed = {m.base: m for m in peb.modules}
    checks = []
    for base in sorted(set(by_base) | set(listed)):
        ours, theirs = listed.get(base), by_base.get(base)
        name = (ours.name if ours is not None and ours.name else
                theirs.name if theirs is not None else "?")
        lists = "" if ours is None else "/".join(ours.lists)
        checks.append(Check(
            "module %s at %#x: loader lists vs ModuleList stream" % (name, base),
            lists or None, None if theirs is None else theirs.path,
            ours is not None and theirs is not None and set(ours.lists) >= {"load", "memory"},
            "a module of the ModuleList stream (dbghelp's snapshot) must be on the load- and "
            "memory-order loader lists, and every listed module in the stream"))
        if ours is not None and theirs is not None and ours.size != theirs.size:
            checks.append(Check("SizeOfImage of %s: loader entry vs ModuleList stream" % name,
                                ours.size, theirs.size, False,
                                "LDR_DATA_TABLE_ENTRY.SizeOfImage must equal "
                                "MINIDUMP_MODULE.SizeOfImage"))
    main = by_base.get(peb.image_base)
    path = peb.image_path
    if main is not None:
        ours_name = None if path is None else path.replace("/", "\\").rsplit("\\", 1)[-1]
        checks.append(Check(
            "image path vs the ModuleList stream's main module", path, main.path,
            ours_name is not None and ours_name.lower() == main.name.lower(),
            "the file name of ProcessParameters.ImagePathName must equal, ignoring case, the "
            "name of the module the stream lists at ImageBaseAddress"))
    return checks


def dump_peb(memory: Any, layout: Any = None, max_modules: int = MAX_MODULES) -> Peb:
    """The process's PEB, found from the first thread's TEB, with its checks.

    Raises:
        InvalidAddressError: the TEB or the PEB is not in the dump.
        DecodeError: the dump has no threads or no SystemInfo stream.
    """
    chosen, note = dump_layout(memory, layout)
    teb = dump_teb(memory, None, chosen)
    if not memory.contains(teb.peb, 0x40):
        raise InvalidAddressError("%s: the PEB at %#x (from the TEB of thread %d) is not in the "
                                  "dump (%s)" % (memory.name, teb.peb, teb.thread_id, NOT_FULL),
                                  address=teb.peb)
    peb = read_peb(memory, teb.peb, chosen, max_modules=max_modules)
    from dataclasses import replace
    peb = replace(peb, notes=peb.notes + (note,))
    return peb.with_checks(module_checks(peb, dump_of(memory).modules))
