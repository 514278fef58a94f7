#!/usr/bin/env python3
"""Make the minidump fixtures of tests/data/minidump/ under Wine.

    python tools/make_minidump_fixture.py                      # -> tests/data/minidump/
    python tools/make_minidump_fixture.py --out DIR --keep     # keep the prefix and the full dumps

It compiles tests/programs/minidump_self.c and peb_self.c with mingw-w64,
makes a private Wine prefix (``WINEDEBUG=-all``, a minimal environment) and:

1. runs ``minidump_self.exe C:\\ksi\\self.dmp``: the program prints what it
   knows of itself (PEB, TEBs, modules, a worker thread's registers and the
   Dr0/Dr7 it set with SetThreadContext, the whole CONTEXT GetThreadContext
   returned) and writes a full-memory dump of itself with MiniDumpWriteDump
   from a vectored exception handler (so the dump has an exception stream);
2. the same with ``--masquerade`` (spoofed ImagePathName and CommandLine,
   version.dll unlinked from InLoadOrderModuleList before the dump), and, when
   ``i686-w64-mingw32-gcc`` and wine32 are installed, the program built for
   32-bit x86 (``self-x86``: x86 CONTEXTs and a 32-bit PEB);
3. runs ``peb_self.exe`` and writes ``winedbg --minidump`` of it: a small
   dump (stacks and small ranges, no PEB or TEB).

The full-memory dumps are about 100 MB. They are **trimmed**: every stream
is kept byte for byte (they all precede the memory data), and the
Memory64List is rewritten to hold only the 4 KiB pages the tests read --
the pages ksinspect touches while decoding every TEB, the PEB, its process
parameters and loader lists, each module's PE header page, the thread
stacks and the page of the watched variable -- with each thread's stack
descriptor moved to its new place (or emptied when the stack is not kept).
Every kept byte is the dump's own. The results are compressed with xz, and a
JSON sidecar per dump keeps what the program printed, the Wine version,
the date, and the original dump's size and range count.

Needs Linux x86-64, ``wine`` and ``x86_64-w64-mingw32-gcc``. It ends only
the processes it started (its own wineserver, by its prefix).
"""
import argparse
import datetime
import json
import lzma
import os
import shutil
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

sys.path.insert(0, os.path.join(ROOT, "tools"))

from ksinspect.memory import open_image                             # noqa: E402
from ksinspect.memory.minidump import DESCRIPTOR64, THREAD, StreamType  # noqa: E402
from ksinspect.windows.checks import read_pe_header                  # noqa: E402
from ksinspect.windows.dump import dump_of, dump_peb, dump_teb      # noqa: E402
from wine_fixture import (PAGE, RecordingMemory, make_prefix, pages_of,  # noqa: E402
                          ranges_of, wine_environment, work_folder)

PROGRAMS = os.path.join(ROOT, "tests", "programs")
MINGW = "x86_64-w64-mingw32-gcc"
MINGW32 = "i686-w64-mingw32-gcc"      # a 32-bit build too, when it and wine32 are installed


def needed_pages(memory, printed):
    rec = RecordingMemory(memory)
    dump = dump_of(memory)
    dump_peb(rec)
    for t in dump.threads:
        dump_teb(rec, t.thread_id)
    for m in dump.modules:
        try:
            read_pe_header(rec, m.base)
        except Exception:          # a header not in the dump: nothing to keep
            pass
    wanted = list(rec.touched)
    wanted += [(t.stack_start, t.stack_size) for t in dump.threads]
    for key in ("watched",):
        if key in printed:
            wanted.append((int(printed[key], 16), 4))
    return [p for p in pages_of(wanted) if memory.contains(p, PAGE)]


def trim(path, pages, out_path):
    """Rewrite a full-memory dump keeping only ``pages`` in its Memory64List."""
    with open(path, "rb") as f:
        data = f.read()
    memory = open_image(path)
    dump = dump_of(memory)
    (m64,) = [s for s in dump.streams if s.type == StreamType.MEMORY64_LIST]
    count, base = struct.unpack_from("<QQ", data, m64.rva)
    for s in dump.streams:
        if s.type != StreamType.UNUSED and s.rva + s.size > base:
            raise SystemExit("%s: stream %d lies after the memory data; cannot trim" % (path, s.index))
    runs = [(start, end - start) for start, end in ranges_of(pages)]
    head = bytearray(data[:base])
    body = bytearray()
    new_rva = {}
    for start, size in runs:
        new_rva[start] = (base + len(body), size)
        body += memory.read(start, size)
    struct.pack_into("<QQ", head, m64.rva, len(runs), base)
    for i, (start, size) in enumerate(runs):
        DESCRIPTOR64.pack_into(head, m64.rva + 16 + 16 * i, start, size)
    end = m64.rva + 16 + 16 * len(runs)
    head[end:m64.rva + m64.size] = bytes(m64.rva + m64.size - end)
    struct.pack_into("<I", head, 32 + 12 * m64.index + 4, 16 + 16 * len(runs))
    (threads,) = [s for s in dump.streams if s.type == StreamType.THREAD_LIST]
    for i, t in enumerate(dump.threads):
        at = threads.rva + 4 + i * THREAD.size
        rva, size = 0, 0
        for start, (rrva, rsize) in new_rva.items():
            if start <= t.stack_start and t.stack_start + t.stack_size <= start + rsize:
                rva, size = rrva + t.stack_start - start, t.stack_size
        struct.pack_into("<II", head, at + 32, size, rva)
    memory.close()
    with lzma.open(out_path, "wb", preset=9 | lzma.PRESET_EXTREME) as f:
        f.write(bytes(head) + bytes(body))
    return len(runs), len(dump.ranges), len(data)


def parse_printed(lines):
    printed, modules = {}, []
    for line in lines:
        key, _, value = line.partition("=")
        if key == "module":
            modules.append(value)
        else:
            printed[key] = value
    printed["modules"] = modules
    return printed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "minidump"))
    ap.add_argument("--keep", action="store_true", help="keep the prefix and the full dumps")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    with work_folder("ksinspect-minidump-", args.keep) as work:
        prefix = os.path.join(work, "prefix")
        env = wine_environment(work, prefix)
        try:
            _make(args.out, work, prefix, env)
        finally:
            subprocess.run(["wineserver", "-k"], env=env, timeout=60)
    return 0


def _make(out, work, prefix, env):
    """Build the programs, run them in the prefix of *env*, write the fixtures to *out*."""
    for name, libs in (("minidump_self", ["-lpsapi", "-ldbghelp"]), ("peb_self", ["-lpsapi"])):
        subprocess.run([MINGW, "-O1", "-Wall", "-o", os.path.join(work, name + ".exe"),
                        os.path.join(PROGRAMS, name + ".c")] + libs, check=True)
    runs = [("self", "minidump_self.exe", []),
            ("self-masquerade", "minidump_self.exe", ["--masquerade"])]
    if shutil.which(MINGW32):
        subprocess.run([MINGW32, "-O1", "-Wall", "-o", os.path.join(work, "minidump_self32.exe"),
                        os.path.join(PROGRAMS, "minidump_self.c"), "-lpsapi", "-ldbghelp"],
                       check=True)
        runs.append(("self-x86", "minidump_self32.exe", []))
    make_prefix(env)
    drive = os.path.join(prefix, "drive_c", "ksi")
    os.makedirs(drive, exist_ok=True)
    for _stem, name, _extra in runs + [(None, "peb_self.exe", None)]:
        shutil.copy(os.path.join(work, name), drive)
    wine_version = subprocess.run(["wine", "--version"], env=env, capture_output=True,
                                  text=True).stdout.strip()
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for stem, exe, extra in runs:
        run = subprocess.run(["wine", "C:\\ksi\\" + exe, "C:\\ksi\\%s.dmp" % stem]
                             + extra, env=env, capture_output=True, timeout=300)
        lines = run.stdout.decode("utf-8", "replace").replace("\r", "").splitlines()
        printed = parse_printed(lines)
        if printed.get("ok") is None and not any(l.startswith("dump=") for l in lines):
            raise SystemExit("%s: no dump written: %s" % (stem, lines[-3:]))
        full = os.path.join(drive, stem + ".dmp")
        memory = open_image(full)
        pages = needed_pages(memory, printed)
        memory.close()
        kept, ranges, size = trim(full, pages, os.path.join(out, stem + ".dmp.xz"))
        with open(os.path.join(out, stem + ".json"), "w") as f:
            json.dump({"what": "MiniDumpWriteDump(MiniDumpWithFullMemory) of "
                       "tests/programs/minidump_self.c (%s) %s under Wine, trimmed" % (
                           exe, " ".join(extra)),
                       "printed_lines": lines, "printed": printed, "wine": wine_version,
                       "date": date, "original_size": size, "original_ranges": ranges,
                       "kept_ranges": kept, "kept_pages": len(pages)}, f, indent=1)
        print("%s: %d bytes, %d ranges -> %d pages in %d ranges" % (stem, size, ranges,
                                                                     len(pages), kept))
    # 3. winedbg --minidump of a waiting program
    proc = subprocess.Popen(["wine", "C:\\ksi\\peb_self.exe"], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode("utf-8", "replace").strip()
        if not line:
            break
        lines.append(line)
        if line == "ready":
            break
    printed = parse_printed(lines)
    small = os.path.join(drive, "winedbg.dmp")
    try:
        subprocess.run(["wine", "winedbg", "--minidump", "C:\\ksi\\winedbg.dmp",
                        printed["pid"]], env=env, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        pass
    proc.stdin.close()
    proc.wait(timeout=60)
    if not os.path.exists(small):
        # With wine32 installed, `wine winedbg` is the 32-bit debugger, which cannot
        # attach to a 64-bit program (error 5): keep the winedbg.dmp.xz made before.
        print("winedbg --minidump wrote nothing: the existing winedbg.dmp.xz is kept")
    else:
        with open(small, "rb") as f, lzma.open(os.path.join(out, "winedbg.dmp.xz"),
                                               "wb", preset=9) as g:
            g.write(f.read())
        with open(os.path.join(out, "winedbg.json"), "w") as f:
            json.dump({"what": "winedbg --minidump of tests/programs/peb_self.c under Wine "
                       "(untrimmed)", "printed_lines": lines, "printed": printed,
                       "wine": wine_version, "date": date}, f, indent=1)
        print("winedbg: %d bytes" % os.path.getsize(small))


if __name__ == "__main__":
    sys.exit(main())
