"""One image's triage: :func:`triage_image`, a plain function of a path and the
options, so any engine can run it (this process, a Dask worker, ``dask.bag``,
a ``multiprocessing`` pool).

The checks run in order, each from what the ones before found: the input;
the CPU state (paging mode, CR3); the OS family (VMCOREINFO or a symbol file
says Linux; a kernel image in kernel memory says Windows); the GDT and IDT;
the page tables; for Windows, pslist against psscan; for a minidump, the PEB
checks. A check that cannot run records why in its section and the next one
runs; an image that cannot be opened gives a record whose ``error`` says why.
"""
import contextlib
import os
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ..errors import KsinspectError
from ..memory import open_image
from . import checks
from .record import Deadline, TimeLimitReached, TriageFinding, TriageOptions, TriageRecord


class _Record:
    """The sections and findings gathered so far (becomes a TriageRecord)."""

    def __init__(self, path: str):
        self.path = path
        self.sections: Dict[str, Any] = {}
        self.findings: List[TriageFinding] = []
        self.error: Optional[str] = None
        self.timings: Dict[str, float] = {}

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) +
                                       time.perf_counter() - started, 6)

    def run(self, name: str, step: Callable[[], Optional[Tuple[dict, list]]],
            deadline: Deadline, what: str) -> bool:
        """Run one check into section ``name``; False when it raised (its section
        then holds the error). The time limit is not caught: it ends the image."""
        deadline.enter(what)
        try:
            with self.timed(name):
                result = step()
        except TimeLimitReached:
            raise
        except KsinspectError as exc:
            self.sections[name] = {"error": str(exc)}
            return False
        if result is not None:
            section, findings = result
            self.sections[name] = section
            self.findings += findings
        return True


def _internal(exc: BaseException) -> str:
    return ("internal error (a ksinspect bug, please report it): %s: %s"
            % (type(exc).__name__, exc)).replace("\n", " ")


def _checks(memory: Any, record: _Record, options: TriageOptions, deadline: Deadline) -> None:
    path = record.path
    record.run("input", lambda: checks.input_section(memory, path), deadline,
               "reading the image's headers")
    if options.hash:
        deadline.enter("hashing the file")
        try:
            with record.timed("hash"):
                record.sections["input"]["sha256"] = checks.sha256_of(path, deadline)
        except TimeLimitReached:
            raise
        except KsinspectError as exc:
            record.sections["input"]["sha256_error"] = str(exc)
    space, cpu = checks.cpu_space(memory)
    record.sections["cpu"] = cpu

    symbols = None
    symbol_path = checks.find_symbols(path, options.symbols_dir)
    if symbol_path is not None:
        deadline.enter("reading symbols")
        try:
            with record.timed("symbols"):
                symbols = checks.load_symbols(symbol_path)
            record.sections["symbols"] = {"source": symbol_path, "count": len(symbols),
                                          "text_range": list(symbols.text_range)
                                          if symbols.text_range else None}
        except KsinspectError as exc:
            record.sections["symbols"] = {"source": symbol_path, "error": str(exc)}
    os_section = checks.linux_evidence(memory, symbols) or checks.dump_evidence(memory)

    kernel = build = scan = None
    if os_section is None and space is None and memory.cpu is None and options.layout:
        deadline.enter("finding the System process's DirectoryTableBase (psscan)")
        try:
            with record.timed("system_dtb"):
                space, scan, how = checks.raw_windows_space(memory, options, deadline)
            record.sections["cpu"] = {"paging_mode": space.mode.value, "cr3": space.cr3,
                                      "cpus": 0, "how": how}
        except KsinspectError as exc:
            record.sections["cpu"] = {"paging_mode": None, "cr3": None, "cpus": 0,
                                      "error": "no CPU state, and no kernel space from "
                                               "layout %s: %s" % (options.layout, exc)}
    family = os_section["family"] if os_section else None
    if space is not None:
        record.run("paging", lambda: checks.page_table_check(space, family, options, deadline),
                   deadline, "walking the page tables")
    if os_section is None and space is not None:
        if checks.kernel_search_allowed(record.sections.get("paging")):
            deadline.enter("looking for a Windows kernel image")
            with record.timed("kernel_search"):
                kernel = checks.windows_kernel(space)
        else:
            record.sections["os"] = {"family": None, "release": None, "evidence": None,
                                     "note": "no Windows kernel search: the page-table walk "
                                             "did not finish or maps too many pages there"}
        if kernel is not None:
            os_section = checks.windows_os(space, kernel)
            build = os_section["build"]
            if space.va_bits == 32 and "error" not in record.sections["paging"]:
                # Windows' 2G/2G split moves the 32-bit kernel half: count again.
                record.findings = [f for f in record.findings if f.check != "paging"]
                record.run("paging", lambda: checks.page_table_check(
                    space, "windows", options, deadline), deadline, "walking the page tables")
    record.sections["os"] = os_section or record.sections.get("os") or {
        "family": None, "release": None, "evidence": None}

    if memory.cpu is not None:
        text_range, text_source = None, None
        if symbols is not None and symbols.text_range:
            text_range, text_source = symbols.text_range, "symbols"
        elif kernel is not None:
            text_range = (kernel.base, kernel.base + kernel.size)
            text_source = "the kernel image %s" % (kernel.name or "")
        record.run("gdt", lambda: checks.gdt_check(memory), deadline, "reading the GDT")
        record.run("idt", lambda: checks.idt_check(memory, symbols, text_range, text_source),
                   deadline, "reading the IDT")
    if kernel is not None:
        record.run("windows", lambda: checks.windows_check(memory, space, kernel, build,
                                                           options, deadline, scan),
                   deadline, "checking the Windows processes")
    record.run("process_dump", lambda: checks.process_dump_check(memory), deadline,
               "checking the process dump")


def triage_image(path: Any, options: Optional[TriageOptions] = None) -> TriageRecord:
    """Triage one image: open it, run every check that applies, never raise for
    a bad image.

    Args:
        path: the image file (made absolute: the record names it so).
        options: shared by the images of a run (default :class:`TriageOptions`).

    Returns:
        its :class:`TriageRecord`; ``error`` is set when the image cannot be
        opened or ran past the time limit (the sections done so far are kept).
    """
    options = options or TriageOptions()
    path = os.path.abspath(os.fspath(path))
    started = time.perf_counter()
    deadline = Deadline(options.time_limit)
    record = _Record(path)
    try:
        with record.timed("open"):
            memory = open_image(path)
    except KsinspectError as exc:
        record.error = str(exc)
    except Exception as exc:    # noqa: BLE001 - one image never stops the run
        record.error = _internal(exc)
    else:
        with memory:
            try:
                _checks(memory, record, options, deadline)
            except TimeLimitReached as exc:
                record.error = str(exc)
            except Exception as exc:    # noqa: BLE001
                record.error = _internal(exc)
    s = record.sections
    return TriageRecord(path, input=s.get("input"), cpu=s.get("cpu"), os=s.get("os"),
                        symbols=s.get("symbols"), gdt=s.get("gdt"), idt=s.get("idt"),
                        paging=s.get("paging"), windows=s.get("windows"),
                        process_dump=s.get("process_dump"), findings=tuple(record.findings),
                        error=record.error, seconds=round(time.perf_counter() - started, 6),
                        timings=record.timings)
