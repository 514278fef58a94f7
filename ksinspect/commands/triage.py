"""``ksinspect triage IMAGE...``: ksinspect's checks over many images, in this
process or on a Dask cluster; one record per image as each finishes, then a
summary (images by finding, slowest images, errors)."""
import json
import math
import os
import sys
import time
from typing import IO, List, Optional

from ..errors import KsinspectError
from ..live.signals import SessionInterrupted, critical, shutdown_on_signals
from ..render import csv_cell, table
from ..safe_text import printable
from ..text_input import CAPS, cap_text, read_text_input
from ..triage import DEFAULT_RETRIES, Engine, TriageOptions, summarize
from ..triage.engine import dask_available, unique_paths
from ._args import UsageError

class ImagesFailed(KsinspectError):
    """Some images of the run could not be triaged (exit status 1, after every record)."""


CSV_COLUMNS = ("path", "format", "size", "os", "paging_mode", "cr3", "findings", "codes",
               "error", "seconds", "attempts", "worker")
LINE = "%-4s %8.2fs %3d  %-40s %s"


def _note(errors: IO[str], text: str) -> None:
    errors.write("ksinspect: note: %s\n" % text)


def _read_list(path: str) -> List[str]:
    """Image paths from a file (``-``: stdin), one per line; blank lines and
    lines starting with ``#`` are skipped. Read through the bounded text reader
    (a regular file, at most the cap of an address list)."""
    def usage(message: str) -> UsageError:
        return UsageError("argument --list: %s" % message)

    if path == "-":
        data = sys.stdin.read(CAPS["addresses"] + 1)
        if len(data) > CAPS["addresses"]:
            raise usage("standard input holds more than %s of paths" % cap_text("addresses"))
    else:
        raw = read_text_input(path, "addresses", usage, "image list")
        try:
            data = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise usage("%s: not UTF-8 text: %s" % (path, exc)) from None
    return [line.strip() for line in data.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _csv_row(record) -> dict:
    d = record.to_dict()
    cpu = d["cpu"] or {}
    return {"path": record.path, "format": (d["input"] or {}).get("format"),
            "size": (d["input"] or {}).get("size"), "os": (d["os"] or {}).get("family"),
            "paging_mode": cpu.get("paging_mode"), "cr3": cpu.get("cr3"),
            "findings": len(record.findings), "codes": ";".join(record.codes),
            "error": record.error, "seconds": record.seconds, "attempts": record.attempts,
            "worker": record.worker}


class _Writer:
    """Writes each record as it arrives, in the chosen format, whole lines only."""

    def __init__(self, out: IO[str], fmt: str):
        self.out, self.fmt, self.count = out, fmt, 0
        if fmt == "csv":
            import csv
            self._csv = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
            self._write(lambda: self._csv.writeheader())
        elif fmt == "json":
            self._write(lambda: out.write("["))
        elif fmt == "table":
            self._write(lambda: out.write("%-4s %9s %3s  %-40s %s\n" % (
                "", "time", "#", "findings", "image")))

    def _write(self, action) -> None:
        with critical():            # a signal never cuts a record in half
            action()
            self.out.flush()

    def record(self, record) -> None:
        fmt = self.fmt
        if fmt == "jsonl":
            self._write(lambda: self.out.write(json.dumps(record.to_dict()) + "\n"))
        elif fmt == "json":
            text = json.dumps(record.to_dict(), indent=2)
            self._write(lambda: self.out.write((",\n" if self.count else "\n") + text))
        elif fmt == "csv":
            row = {k: csv_cell(v, k) for k, v in _csv_row(record).items()}
            self._write(lambda: self._csv.writerow(row))
        else:
            status = "ERR" if record.error else ("FIND" if record.findings else "ok")
            what = record.error if record.error else ", ".join(record.codes)
            line = LINE % (status, record.seconds, len(record.findings), printable(what[:200]),
                           printable(record.path))
            self._write(lambda: self.out.write(line + "\n"))
        self.count += 1

    def finish(self) -> None:
        if self.fmt == "json":
            self._write(lambda: self.out.write("\n]\n" if self.count else "]\n"))


class _Progress:
    """A one-line bar on a terminal: images done, failed and running."""

    def __init__(self, stream: IO[str], total: int):
        self.stream, self.total = stream, total
        self.enabled = total > 0 and hasattr(stream, "isatty") and stream.isatty()
        self.start = time.monotonic()
        self.last = 0.0

    def show(self, done: int, failed: int, running: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and done < self.total and now - self.last < 0.2):
            return
        self.last = now
        width = 30
        filled = width * done // self.total
        self.stream.write("\r\033[K[%s%s] %d/%d done, %d failed, %d running, %.0f s" % (
            "#" * filled, "." * (width - filled), done, self.total, failed, running,
            now - self.start))
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


def summary_text(summary, engine_text: str, wall: float) -> str:
    lines = ["", "%d images %s in %.1f s (%.1f image-seconds); %d could not be triaged" % (
        summary.images, engine_text, wall, summary.seconds, summary.failed)]
    if summary.by_code:
        rows = [{"finding": code, "images": len(paths), "example": paths[0]}
                for code, paths in summary.by_code.items()]
        lines += ["", "Images by finding:", table(rows, ("finding", "images", "example"))]
    if summary.slowest:
        lines += ["", "Slowest images:", table([{"seconds": "%.2f" % s, "image": p}
                                                for s, p in summary.slowest],
                                               ("seconds", "image"))]
    if summary.errors:
        lines += ["", "Errors:", table([{"image": p, "error": e} for p, e in summary.errors],
                                       ("image", "error"))]
    if summary.retried:
        lines += ["", "Retried on the cluster:", table(
            [{"attempts": a, "image": p} for a, p in summary.retried], ("attempts", "image"))]
    return "\n".join(lines) + "\n"


def _options(args) -> TriageOptions:
    for name in ("time_limit", "max_entries", "max_candidates"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UsageError("argument --%s: %s is not a positive number" % (
                name.replace("_", "-"), value))
    if args.symbols_dir is not None and not os.path.isdir(args.symbols_dir):
        raise UsageError("argument --symbols-dir: %s is not a folder" % args.symbols_dir)
    layout = args.layout
    if layout is not None:
        from .options import layout_argument
        layout_argument(layout)         # an unknown build is bad usage, once, here
        if os.path.exists(layout):
            layout = os.path.abspath(layout)
    kwargs = {}
    if args.max_entries is not None:
        kwargs["max_entries"] = args.max_entries
    if args.max_candidates is not None:
        kwargs["max_candidates"] = args.max_candidates
    return TriageOptions(symbols_dir=os.path.abspath(args.symbols_dir) if args.symbols_dir
                         else None, layout=layout, hash=args.hash, time_limit=args.time_limit,
                         **kwargs)


def _engine(args, errors: IO[str]) -> Engine:
    if args.scheduler is not None and args.workers is not None:
        raise UsageError("argument --scheduler: give either --workers N or --scheduler "
                         "ADDRESS, not both")
    if args.retries < 0:
        raise UsageError("argument --retries: %d is negative" % args.retries)
    workers = args.workers
    if workers is not None and workers < 0:
        raise UsageError("argument --workers: %d is negative" % workers)
    if workers is None and args.scheduler is None and not dask_available():
        _note(errors, "Dask is not installed (pip install \"ksinspect[fleet]\"): running in "
                      "this process")
        workers = 0
    return Engine(workers, args.scheduler, retries=args.retries)


def cmd_triage(args, out: IO[str], errors: Optional[IO[str]] = None) -> int:
    errors = errors or sys.stderr
    paths = list(args.images) + (_read_list(args.list) if args.list else [])
    if not paths:
        raise UsageError("give IMAGE paths, or --list FILE")
    paths = unique_paths(paths)
    options = _options(args)
    fmt = args.format
    engine = _engine(args, errors)
    progress = _Progress(errors, len(paths))
    summary = summarize(())
    started = time.monotonic()
    writer = None
    interrupted = None
    with shutdown_on_signals(exiting=True):
        try:
            with engine:
                writer = _Writer(out, fmt)
                progress.show(0, 0, 0, force=True)
                for record in engine.run(paths, options):
                    progress.clear()
                    writer.record(record)
                    summary.add(record)
                    progress.show(summary.images, summary.failed, engine.running())
        except SessionInterrupted as exc:
            interrupted = exc
        finally:
            progress.clear()
            if writer is not None:
                writer.finish()
    wall = time.monotonic() - started
    if interrupted is not None:
        errors.write("ksinspect: interrupted by %s after %d of %d images; %s\n" % (
            interrupted.name, summary.images, len(paths),
            "the cluster it started is closed" if engine.started_cluster
            else "the records written so far are complete"))
        return interrupted.exit_status
    if not args.no_summary:
        text = summary_text(summary, engine.describe(), wall)
        (out if fmt == "table" else errors).write(text)
    if summary.failed:
        raise ImagesFailed("%d of %d images could not be triaged (their records say why)"
                           % (summary.failed, summary.images))
    return 0


def _default_format(out) -> str:
    """JSON lines unless the output is a terminal."""
    return "table" if hasattr(out, "isatty") and out.isatty() else "jsonl"


def register(sub, output) -> None:
    p = sub.add_parser(
        "triage", parents=[output], help="run the checks over many images (Dask optional)",
        description="Run ksinspect's checks over many memory images: image facts, paging mode "
                    "and CR3, OS family, GDT/IDT findings, page-table findings, for Windows "
                    "kernels pslist against psscan. One record per image as each finishes "
                    "(JSON lines when not a terminal), then a summary. Images must be readable "
                    "by path where the workers run (shared storage): only paths cross the "
                    "scheduler.")
    # Not p.set_defaults(format=...): the --format action is shared by every command.
    p.set_defaults(default_format=_default_format)
    p.add_argument("images", metavar="IMAGE", nargs="*", help="memory images")
    p.add_argument("--list", metavar="FILE",
                   help="a file of image paths, one per line ('-' for stdin; # comments)")
    p.add_argument("--symbols-dir", metavar="DIR",
                   help="find each image's System.map / kallsyms here: DIR/NAME.kallsyms..., "
                        "DIR/NAME/kallsyms... (NAME: the image's file or folder name)")
    p.add_argument("--layout", metavar="L",
                   help="Windows layout for every Windows image (default: from the kernel's "
                        "NtBuildNumber); needed for raw Windows images without CPU state")
    p.add_argument("--hash", action="store_true",
                   help="sha256 of each image file (reads each whole)")
    p.add_argument("--time-limit", type=float, metavar="SECONDS",
                   help="stop an image's checks after this long (checked between the "
                        "chunks of each walk and scan)")
    p.add_argument("--max-entries", type=int, metavar="N",
                   help="paging entries the page-table walk reads per image (default 2^27)")
    p.add_argument("--max-candidates", type=int, metavar="N",
                   help="psscan candidates decoded per image (default 65536)")
    engine = p.add_mutually_exclusive_group()
    engine.add_argument("--workers", type=int, metavar="N",
                        help="a local Dask cluster of N worker processes (default: one per "
                             "core); 0 runs in this process without Dask")
    engine.add_argument("--scheduler", metavar="ADDRESS",
                        help="submit to an existing Dask cluster, e.g. tcp://host:8786")
    p.add_argument("--retries", type=int, default=DEFAULT_RETRIES, metavar="N",
                   help="runs after the first per image on a cluster, when its worker dies "
                        "or it fails (default %d)" % DEFAULT_RETRIES)
    p.add_argument("--no-summary", action="store_true", help="records only")
    p.set_defaults(func=cmd_triage)


__all__ = ["cmd_triage", "register"]
