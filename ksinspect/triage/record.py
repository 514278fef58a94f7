"""What one image's triage gives: :class:`TriageRecord`, its findings, and the
options every image of a run shares (:class:`TriageOptions`).

Both are frozen dataclasses of plain values (ints, strings, lists, dicts), so
they pickle, cross a Dask scheduler unchanged and serialise to JSON with
:meth:`TriageRecord.to_dict`. A record holds one section per check; a check
that could not run says why in its section (``error``) and the run goes on.
"""
import time
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

from ..errors import KsinspectError
from ..paging import DEFAULT_MAX_ENTRIES

#: The record's version: bumped when a key changes meaning.
SCHEMA = "ksinspect-triage/1"
#: Fields that depend on how and where the image was processed, not on the image:
#: two runs over the same images agree on everything else.
VOLATILE_FIELDS = ("seconds", "timings", "attempts", "worker")
#: Ranges given per page-table finding (the count is always whole).
MAX_LISTED_RANGES = 8
#: Ranges one piece of the page-table walk may hold (40 bytes each in C records).
DEFAULT_MAX_RANGES = 1 << 20


class TimeLimitReached(KsinspectError, TimeoutError):
    """An image's checks ran past ``TriageOptions.time_limit``."""


@dataclass(frozen=True)
class TriageOptions:
    """The options of a triage run: the same for every image (picklable).

    Attributes:
        symbols_dir: a folder searched for each image's System.map / kallsyms
            (see :func:`ksinspect.triage.checks.find_symbols`).
        layout: the Windows layout for every Windows image (a name or a file);
            None: chosen from the kernel's NtBuildNumber.
        hash: compute the sha256 of each image file (reads it whole: costs
            storage bandwidth, the rest of triage touches little of an image).
        time_limit: seconds per image; the checks stop at the next chunk
            boundary of a walk or scan past it (None: no limit).
        max_entries: paging entries the page-table walk reads per image.
        max_ranges: ranges one slice of the walk may hold.
        max_processes, max_candidates: the pslist and psscan caps.
    """

    symbols_dir: Optional[str] = None
    layout: Optional[str] = None
    hash: bool = False
    time_limit: Optional[float] = None
    max_entries: int = DEFAULT_MAX_ENTRIES
    max_ranges: int = DEFAULT_MAX_RANGES
    max_processes: int = 1 << 16
    max_candidates: int = 1 << 16

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Deadline:
    """The per-image time limit, checked between the steps of each check and as
    the progress callback of walks and scans (so at chunk boundaries)."""

    def __init__(self, limit: Optional[float]):
        self.limit = limit
        self.start = time.perf_counter()
        self.step = "opening the image"

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def check(self, _fraction: Any = None) -> None:
        """Raise :class:`TimeLimitReached` when the limit is past."""
        if self.limit is not None and self.elapsed() > self.limit:
            raise TimeLimitReached("the time limit of %g s per image was reached while %s"
                                   % (self.limit, self.step))

    def enter(self, step: str) -> None:
        self.check()
        self.step = step


@dataclass(frozen=True)
class TriageFinding:
    """One thing worth a look in one image.

    Attributes:
        check: the check that found it (``gdt``, ``idt``, ``paging``,
            ``windows``, ``process_dump``, ``input``).
        code: a stable code: the library's own where it has one (the GDT/IDT
            codes of :mod:`ksinspect.tables`), else one of :data:`CODES`.
        message: one line for a reader.
        where: where in the image (``{"vector": 20}``, ``{"index": 31}``,
            ``{"ranges": [[start, end], ...], "pages": n}``, ...), or None.
    """

    check: str
    code: str
    message: str
    where: Optional[Dict[str, Any]] = None

    def to_dict(self) -> dict:
        return {"check": self.check, "code": self.code, "message": self.message,
                "where": self.where}

    def __str__(self) -> str:
        return "%s/%s: %s" % (self.check, self.code, self.message)


#: Finding codes triage adds where the library reports facts without a code.
CODES = {
    "kernel-wx-pages": "supervisor pages that are both writable and executable",
    "no-execute-disable": "no execute-disable bit (32-bit paging, or EFER.NXE=0): every "
                          "writable page is executable",
    "user-kernel-mapping": "user-accessible pages in the kernel half of the address space",
    "reserved-bits": "present paging entries with reserved bits set (the processor faults "
                     "on them)",
    "walk-limit": "the page-table walk reached a cap before it finished",
    "process-unlinked": "a live process psscan finds that ActiveProcessLinks does not reach",
    "process-list": "the ActiveProcessLinks walk ended early or found broken links",
    "scan-limit": "psscan stopped at its candidate cap: processes past it are not compared",
    "peb-check": "a PEB fact disagrees with the dump's own record of it",
    "peb-finding": "the PEB's loader lists or strings are inconsistent",
    "image-warning": "the image file itself is odd (overlapping ranges, registers that "
                     "disagree)",
}


@dataclass(frozen=True)
class TriageRecord:
    """Everything triage found in one image (:func:`ksinspect.triage.triage_image`).

    Attributes:
        path: the image, as an absolute path.
        input: size, format, compression, sha256 (with ``hash``), physical bytes,
            ranges, the image's own warnings.
        cpu: paging mode, CR3 and how they were found, or None.
        os: ``family`` (``linux``, ``windows`` or None) and the evidence.
        symbols: the symbol file used and the kernel text range, or None.
        gdt, idt, paging, windows, process_dump: one section per check (None
            when it does not apply; ``{"error": ...}`` when it could not run).
        findings: every finding of every check.
        error: the one-line reason the image could not be read at all (or the
            time limit that stopped it), else None.
        seconds: how long the image took; timings: seconds per step (``open``,
            ``hash``, ``symbols``, ``paging``, ``kernel_search``, ``gdt``, ``idt``,
            ``windows``...), for costing a fleet; attempts: how many times a cluster
            ran it (1 unless a worker died or the task was retried);
            worker: the worker that produced the record (None in-process).
    """

    path: str
    input: Optional[Dict[str, Any]] = None
    cpu: Optional[Dict[str, Any]] = None
    os: Optional[Dict[str, Any]] = None
    symbols: Optional[Dict[str, Any]] = None
    gdt: Optional[Dict[str, Any]] = None
    idt: Optional[Dict[str, Any]] = None
    paging: Optional[Dict[str, Any]] = None
    windows: Optional[Dict[str, Any]] = None
    process_dump: Optional[Dict[str, Any]] = None
    findings: Tuple[TriageFinding, ...] = ()
    error: Optional[str] = None
    seconds: float = 0.0
    timings: Dict[str, float] = field(default_factory=dict)
    attempts: int = 1
    worker: Optional[str] = None
    schema: str = field(default=SCHEMA)

    @property
    def codes(self) -> List[str]:
        """The distinct finding codes, in order of first appearance."""
        return list(dict.fromkeys(f.code for f in self.findings))

    def to_dict(self) -> dict:
        result = {f.name: getattr(self, f.name) for f in fields(self)}
        result["findings"] = [f.to_dict() for f in self.findings]
        return result

    @classmethod
    def from_dict(cls, data: dict) -> "TriageRecord":
        values = dict(data)
        values["findings"] = tuple(TriageFinding(**f) for f in values.get("findings", ()))
        return cls(**values)

    def comparable(self) -> dict:
        """:meth:`to_dict` without :data:`VOLATILE_FIELDS`: what two runs over the
        same image must agree on."""
        result = self.to_dict()
        for name in VOLATILE_FIELDS:
            result.pop(name)
        return result

    def __str__(self) -> str:
        if self.error:
            return "%s: error: %s" % (self.path, self.error)
        return "%s: %d finding(s)%s" % (self.path, len(self.findings),
                                        " (%s)" % ", ".join(self.codes) if self.codes else "")
