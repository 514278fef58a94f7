#!/usr/bin/env python3
"""Capture a real Windows process's PEB memory under Wine, as a small memory sample.

    python tools/capture_wine_process.py                  # -> tests/data/wine/
    python tools/capture_wine_process.py --out DIR --keep # keep the prefix and the .exe

It compiles tests/programs/peb_self.c with mingw-w64, makes a private Wine
prefix (``WINEDEBUG=-all``, a minimal environment so nothing of the caller's
environment ends up in the sample), copies the program to
``C:\\ksinspect\\peb_self.exe`` in it and runs it twice: normally, and with
``--masquerade`` (it rewrites its own ImagePathName and CommandLine and
unlinks version.dll from InLoadOrderModuleList). While each run waits on
stdin, ksinspect decodes the TEB, the PEB, its process parameters and the
three loader lists, and the PE header at each module base, through a reader
that records every range it reads. The touched ranges are rounded to 4 KiB
pages, read once more and written as a LiME file (each range header holds
the pages' *virtual* addresses: open it with ``open_image`` and read it as a
flat address space, VA == image address), compressed with xz. A JSON sidecar
keeps what the program printed about itself (from Windows APIs, not from
ksinspect), the ``/proc/PID/maps`` lines of the mapped images, the live
cross-checks ksinspect made at capture time, the Wine version and the date.

The process read is the program's own, by the Linux PID it prints about
itself: with a 32-bit Wine installed, ``wine peb_self.exe`` runs it under
``start.exe /exec``, whose PID is the one ``Popen`` returns.

Needs Linux x86-64, ``wine`` and ``x86_64-w64-mingw32-gcc`` (Debian:
``apt-get install -y --no-install-recommends wine wine64
gcc-mingw-w64-x86-64-win32``); one line saying so and exit status 2
otherwise. It ends only the processes it started.
"""
import argparse
import datetime
import json
import lzma
import os
import select
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

from wine_fixture import (INSTALL, RecordingMemory, make_prefix, missing,  # noqa: E402
                          pages_of, ranges_of, wine_environment, work_folder)

PROGRAM = os.path.join(ROOT, "tests", "programs", "peb_self.c")
MINGW = "x86_64-w64-mingw32-gcc"
# Arguments that exercise Windows quoting: a space, a double quote, a backslash.
ARGS = ["plain", "with space", 'with "quote"', "back\\slash"]
RUNS = (("peb_self", []), ("peb_self-masquerade", ["--masquerade"]))
LIME_HEADER = struct.Struct("<IIQQ8x")
LIME_MAGIC, LIME_VERSION = 0x4C694D45, 1
IMAGE_SUFFIXES = (".exe", ".dll", ".drv", ".sys", ".ocx", ".cpl", ".acm", ".ax", ".ime")


def lime_bytes(memory, ranges):
    """A LiME file (version 1): per range a 32-byte header (magic, version,
    s_addr, e_addr inclusive) and the bytes."""
    out = bytearray()
    for start, end in ranges:
        out += LIME_HEADER.pack(LIME_MAGIC, LIME_VERSION, start, end - 1)
        out += memory.read(start, end - start)
    return bytes(out)


def first_line(argv):
    result = subprocess.run(argv, capture_output=True, text=True)
    return (result.stdout or result.stderr).splitlines()[0].strip()


class Program:
    """peb_self.exe under Wine; its key=value lines until "ready"."""

    def __init__(self, argv, env, cwd):
        self.process = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.launcher_pid = self.process.pid
        self.pid = None
        self.lines = []
        pending = b""
        deadline = time.monotonic() + 60
        fd = self.process.stdout.fileno()
        while True:
            while b"\n" not in pending:
                left = deadline - time.monotonic()
                ready, _, _ = select.select([fd], [], [], max(left, 0))
                if not ready:
                    self.stop()
                    raise SystemExit("peb_self.exe said nothing for 60 s")
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise SystemExit("peb_self.exe ended early: %r" % self.process.wait())
                pending += chunk
            line, _, pending = pending.partition(b"\n")
            text = line.decode("utf-8").rstrip("\r")
            if text == "ready":
                printed = [l for l in self.lines if l.startswith("unix_pid=")]
                if not printed:
                    self.stop()
                    raise SystemExit("peb_self.exe did not print its Linux PID (unix_pid=)")
                self.pid = int(printed[0].split("=", 1)[1])
                return
            if text.startswith("error="):
                self.stop()
                raise SystemExit("peb_self.exe: " + text)
            self.lines.append(text)

    def stop(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                if self.pid and self.pid != self.launcher_pid:
                    try:
                        os.kill(self.pid, 9)
                    except ProcessLookupError:
                        pass
                self.process.kill()
                self.process.wait(timeout=10)
        self.process.stdout.close()


def parse_printed(lines):
    values, modules = {}, []
    for line in lines:
        key, _, value = line.partition("=")
        if key == "module":
            base, size, entry, path = value.split(" ", 3)
            modules.append({"base": int(base, 16), "size": int(size, 16),
                            "entry_point": int(entry, 16), "path": path})
        elif key == "unlinked":
            base, path = value.split(" ", 1)
            values[key] = {"base": int(base, 16), "path": path}
        elif key == "env":
            values.setdefault("environment", []).append(value)
        elif key in ("peb", "teb", "image_base"):
            values[key] = int(value, 16)
        elif key in ("pid", "unix_pid", "parent_pid", "bits", "wow64"):
            values[key] = int(value)
        else:
            values[key] = value
    values["modules"] = modules
    return values


def capture(program, name, out_dir):
    from ksinspect.live import wine
    from ksinspect.live.proc_memory import ProcessMemory, read_maps
    from ksinspect.live.windows_process import (bootstrap_layout, choose_layout,
                                                inspect_live_peb, read_os_version)
    from ksinspect.windows.checks import read_pe_header
    from ksinspect.windows.peb import read_peb, read_teb

    with ProcessMemory(program.pid) as live:
        memory = RecordingMemory(live)
        maps = read_maps(program.pid)
        location = wine.locate_teb(program.pid, memory, bootstrap_layout("x64"), maps)
        layout, layout_note = choose_layout(*read_os_version(memory, location.peb, "x64"), "x64")
        read_teb(memory, location.teb, layout)
        peb = read_peb(memory, location.peb, layout)
        for module in peb.modules:
            read_pe_header(memory, module.base)
        ranges = ranges_of(pages_of(memory.touched))
        image = lime_bytes(live, ranges)
    checked = inspect_live_peb(program.pid, layout)
    sample = os.path.join(out_dir, name + ".lime.xz")
    with lzma.open(sample, "wb", preset=9 | lzma.PRESET_EXTREME) as handle:
        handle.write(image)
    images = [m for m in maps if m.path.lower().endswith(IMAGE_SUFFIXES)]
    with open("/proc/%d/maps" % program.pid) as handle:
        map_lines = [line.rstrip("\n") for line in handle
                     if line.split(None, 5)[5:] and
                     line.split(None, 5)[5].strip().lower().endswith(IMAGE_SUFFIXES)]
    sidecar = {
        "what": "memory pages of a Windows x64 process (tests/programs/peb_self.c) running "
                "under Wine, as read by a PEB/TEB/loader decode; LiME ranges hold virtual "
                "addresses",
        "printed_lines": program.lines,
        "printed": parse_printed(program.lines),
        "linux_pid_at_capture": program.pid,
        "launched_as_pid": program.launcher_pid,
        "teb_found_through": "GS base of thread %s (ptrace)" % location.tid,
        "layout": layout.name,
        "layout_note": layout_note,
        "ranges": [[start, end] for start, end in ranges],
        "bytes": sum(end - start for start, end in ranges),
        "maps_of_images": map_lines,
        "mapped_images": len({m.path for m in images}),
        "live_checks": [c.to_dict() for c in checked.checks],
        "live_findings": list(checked.findings),
        "wine_version": first_line(["wine", "--version"]),
        "compiler": first_line([MINGW, "--version"]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    with open(os.path.join(out_dir, name + ".json"), "w") as handle:
        json.dump(sidecar, handle, indent=1, ensure_ascii=False)
        handle.write("\n")
    print("%s: %d pages in %d ranges, %d bytes xz; %d modules; layout %s" % (
        sample, len(pages_of(memory.touched)), len(ranges), os.path.getsize(sample),
        len(peb.modules), layout.name))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "wine"))
    parser.add_argument("--keep", action="store_true", help="keep the prefix (printed)")
    args = parser.parse_args(argv)
    absent = missing("wine", "wineserver", MINGW)
    if absent:
        print("capture_wine_process: not installed: %s (%s)" % (", ".join(absent), INSTALL),
              file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    with work_folder("ksinspect-wine-", args.keep) as root:
        prefix = os.path.join(root, "prefix")
        env = wine_environment(root, prefix)
        make_prefix(env)
        folder = os.path.join(prefix, "drive_c", "ksinspect")
        os.makedirs(folder)
        exe = os.path.join(folder, "peb_self.exe")
        subprocess.run([MINGW, "-O2", "-o", exe, PROGRAM, "-lpsapi"], check=True)
        for name, extra in RUNS:
            program = Program(["wine", exe, *extra, *ARGS], env, folder)
            try:
                capture(program, name, args.out)
            finally:
                program.stop()
        subprocess.run(["wineserver", "-w"], env=env, timeout=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
