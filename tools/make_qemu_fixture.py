#!/usr/bin/env python3
"""Regenerate the real-guest QEMU fixtures in tests/data/qemu/.

Each *profile* boots a stock Debian 12 kernel under QEMU (TCG, one CPU,
128 MiB), waits until a tiny busybox initramfs has reached user space, stops
the VM and captures, all describing the same CPU state:

  info-registers.txt   HMP ``info registers`` (CRLF normalised to LF)
  info-tlb.txt[.xz]    HMP ``info tlb``
  info-mem.txt[.xz]    HMP ``info mem`` (skipped under 5-level paging, where
                       QEMU 7.2's implementation never finishes)
  kallsyms.txt.xz      the guest's own /proc/kallsyms (nokaslr, so it equals
                       System.map), streamed out over the second serial port
  console.log.xz       boot log from the first serial port
  core-trimmed.elf.xz  ELF core from QMP ``dump-guest-memory`` (paging=false)
                       reduced to the ELF header, the notes (byte for byte)
                       and only the physical pages ksinspect needs: every
                       page-table page reachable from CR3 plus the pages
                       holding the GDT, IDT and TSS (and the TSSs of IDT
                       task gates; with PTI, the user CR3's tables).  Pages
                       left out are
                       simply absent from the PT_LOADs.
  core.elf.xz          the untrimmed core, only when its compressed size is
                       below --max-full-mb (otherwise it stays in the cache)
  meta.json            provenance: packages, QEMU version, command line,
                       sha256 of the uncompressed cores, what was kept, ...

Nothing is installed on the host: kernels and busybox-static come from
``apt-get download`` run against a private apt state directory inside the
cache (so i386 packages can be fetched without ``dpkg --add-architecture``,
which can make apt want to remove packages) and are unpacked with
``dpkg -x``.  The host needs apt-get, dpkg and qemu-system-x86
(``apt-get install -y qemu-system-x86``); the script checks and says what is
missing instead of installing anything.

Usage (from the repository root):

  python3 tools/make_qemu_fixture.py                       # all profiles
  python3 tools/make_qemu_fixture.py -p x86_64-4level      # one profile
  python3 tools/make_qemu_fixture.py --verify-only         # re-check output

Only the Python 3.9+ standard library is used.  The ELF-core/note reader and
the page-table walker below double as the verifier (``--verify-only``).
"""

import argparse
import bisect
import datetime
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "data", "qemu")
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "ksinspect-fixtures")

READY_MARKER = "KSINSPECT-READY"
KALLSYMS_END = "KSINSPECT-KALLSYMS-END"
PAGE = 4096

# Order matters: most important first.
PROFILES = {
    "x86_64-4level": dict(
        arch="amd64", flavour="amd64", qemu="qemu-system-x86_64",
        cpu="max,la57=off", paging="4level",
        doc="64-bit kernel, 4-level paging (LA57 hidden from the CPU)"),
    "x86_64-5level": dict(
        arch="amd64", flavour="amd64", qemu="qemu-system-x86_64",
        cpu="max", paging="5level",
        doc="64-bit kernel, 5-level paging (CR4.LA57 set)"),
    "i386-pae": dict(
        arch="i386", flavour="686-pae", qemu="qemu-system-i386",
        cpu="max", paging="pae",
        doc="32-bit PAE kernel (3-level paging, NX)"),
    "i386-2level": dict(
        arch="i386", flavour="686", qemu="qemu-system-i386",
        cpu="qemu32", paging="2level",
        doc="32-bit non-PAE kernel, 2-level paging with 4 MiB PSE pages"),
    "x86_64-pti": dict(
        arch="amd64", flavour="amd64", qemu="qemu-system-x86_64",
        cpu="max,la57=off", paging="4level", append="pti=on", extra=True,
        doc="64-bit kernel, 4-level paging, page-table isolation forced on (pti=on): "
            "user mode runs on its own CR3, without most kernel mappings"),
}

KERNEL_APPEND = "console=ttyS0 panic=-1 nokaslr"


def kernel_append(prof):
    return KERNEL_APPEND + (" " + prof["append"] if prof.get("append") else "")


# With PTI, Linux's user PGD is the page after the kernel PGD (the two are an
# 8 KiB pair: PTI_USER_PGTABLE_BIT = PAGE_SHIFT, arch/x86/include/asm/pgtable.h).
PTI_USER_PGD_OFFSET = 0x1000


class FixtureError(Exception):
    pass


class SkipProfile(Exception):
    pass


def log(msg):
    print("[make_qemu_fixture] " + msg, flush=True)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def open_maybe_xz(path):
    if path.endswith(".xz"):
        return lzma.open(path, "rb")
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_text_fixture(directory, base):
    """Read base or base.xz from directory, whichever exists."""
    for name in (base, base + ".xz"):
        p = os.path.join(directory, name)
        if os.path.exists(p):
            with open_maybe_xz(p) as f:
                return f.read().decode("utf-8", "replace")
    return None


# ---------------------------------------------------------------------------
# ELF core + QEMU note reader
# ---------------------------------------------------------------------------

PT_LOAD, PT_NOTE = 1, 4
EM_386, EM_X86_64 = 3, 62


class ElfCore:
    """Minimal ELF32/ELF64 little-endian core reader (program headers only)."""

    def __init__(self, data):
        self.data = data
        if data[:4] != b"\x7fELF":
            raise FixtureError("not an ELF file")
        self.elfclass = data[4]
        if data[5] != 1:
            raise FixtureError("only little-endian ELF supported")
        if self.elfclass == 2:
            self.ehdr_fmt, self.phdr_fmt = "<16sHHIQQQIHHHHHH", "<IIQQQQQQ"
        elif self.elfclass == 1:
            self.ehdr_fmt, self.phdr_fmt = "<16sHHIIIIIHHHHHH", "<IIIIIIII"
        else:
            raise FixtureError("bad ELF class")
        (self.ident, self.e_type, self.e_machine, self.e_version, self.e_entry,
         self.e_phoff, self.e_shoff, self.e_flags, self.e_ehsize,
         self.e_phentsize, self.e_phnum, self.e_shentsize, self.e_shnum,
         self.e_shstrndx) = struct.unpack_from(self.ehdr_fmt, data, 0)
        if self.e_phnum == 0xFFFF:
            raise FixtureError("PN_XNUM cores are not supported")
        self.phdrs = []
        for i in range(self.e_phnum):
            v = struct.unpack_from(self.phdr_fmt, data, self.e_phoff + i * self.e_phentsize)
            if self.elfclass == 2:
                p_type, p_flags, off, vaddr, paddr, filesz, memsz, align = v
            else:
                p_type, off, vaddr, paddr, filesz, memsz, p_flags, align = v
            self.phdrs.append(dict(type=p_type, flags=p_flags, offset=off, vaddr=vaddr,
                                   paddr=paddr, filesz=filesz, memsz=memsz, align=align))
        self.loads = sorted((p for p in self.phdrs if p["type"] == PT_LOAD),
                            key=lambda p: p["paddr"])
        self._starts = [p["paddr"] for p in self.loads]

    # -- notes ------------------------------------------------------------
    def note_bytes(self):
        return [bytes(self.data[p["offset"]:p["offset"] + p["filesz"]])
                for p in self.phdrs if p["type"] == PT_NOTE]

    def notes(self):
        out = []
        for blob in self.note_bytes():
            pos = 0
            while pos + 12 <= len(blob):
                namesz, descsz, ntype = struct.unpack_from("<III", blob, pos)
                pos += 12
                name = blob[pos:pos + namesz].rstrip(b"\0").decode("ascii", "replace")
                pos += (namesz + 3) & ~3
                desc = blob[pos:pos + descsz]
                pos += (descsz + 3) & ~3
                out.append((name, ntype, desc))
        return out

    def qemu_cpu_states(self):
        return [parse_qemu_cpu_state(desc) for name, _t, desc in self.notes() if name == "QEMU"]

    # -- physical memory --------------------------------------------------
    def find_load(self, paddr):
        i = bisect.bisect_right(self._starts, paddr) - 1
        if i >= 0:
            p = self.loads[i]
            if paddr < p["paddr"] + p["filesz"]:
                return p
        return None

    def read_phys(self, paddr, size):
        p = self.find_load(paddr)
        if p is None or paddr + size > p["paddr"] + p["filesz"]:
            return None
        off = p["offset"] + (paddr - p["paddr"])
        return bytes(self.data[off:off + size])


# target/i386/arch_dump.c: QEMUCPUSegment / QEMUCPUState (same layout for the
# i386 and x86_64 targets; fields after cr[5] are optional, see 'size').
_SEG_FMT = "<IIIIQ"
_SEG_NAMES = ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt")
_GPR_NAMES = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
              "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")


def parse_qemu_cpu_state(desc):
    version, size = struct.unpack_from("<II", desc, 0)
    st = dict(version=version, size=size)
    pos = 8
    for n in _GPR_NAMES:
        st[n] = struct.unpack_from("<Q", desc, pos)[0]
        pos += 8
    for n in _SEG_NAMES:
        sel, limit, flags, _pad, base = struct.unpack_from(_SEG_FMT, desc, pos)
        st[n] = dict(selector=sel, limit=limit, flags=flags, base=base)
        pos += 24
    st["cr"] = list(struct.unpack_from("<5Q", desc, pos))
    pos += 40
    if size >= pos + 8 and len(desc) >= pos + 8:
        st["kernel_gs_base"] = struct.unpack_from("<Q", desc, pos)[0]
    return st


# ---------------------------------------------------------------------------
# Page-table walker (just enough to collect table pages and translate)
# ---------------------------------------------------------------------------

ADDR_MASK_64 = 0x000FFFFFFFFFF000  # bits 12..51; strips NX (63) and flag bits


def paging_mode(cr0, cr4, long_mode):
    if not cr0 & (1 << 31):
        return "none"
    if long_mode:
        return "5level" if cr4 & (1 << 12) else "4level"
    return "pae" if cr4 & (1 << 5) else "2level"


class Walker:
    """Reads page tables from an ElfCore.  Only what the fixtures need."""

    def __init__(self, core, mode, cr3, cr4):
        self.core, self.mode, self.cr3, self.cr4 = core, mode, cr3, cr4

    def _entries(self, table_pa, count, esize):
        raw = self.core.read_phys(table_pa, count * esize)
        if raw is None:
            return None
        return struct.unpack("<%d%s" % (count, "Q" if esize == 8 else "I"), raw)

    def table_pages(self):
        """Set of physical page addresses holding page tables reachable from CR3."""
        pages = set()
        if self.mode in ("4level", "5level"):
            levels = 5 if self.mode == "5level" else 4
            self._walk64(self.cr3 & ADDR_MASK_64, levels, pages)
        elif self.mode == "pae":
            pdpt = self.cr3 & 0xFFFFFFE0  # 32-byte aligned, inside one page
            pages.add(pdpt & ~0xFFF)
            ents = self._entries(pdpt, 4, 8) or ()
            for e in ents:
                if e & 1:
                    self._walk64(e & ADDR_MASK_64, 2, pages)
        elif self.mode == "2level":
            pd = self.cr3 & 0xFFFFF000
            pages.add(pd)
            ents = self._entries(pd, 1024, 4) or ()
            pse = bool(self.cr4 & (1 << 4))
            for e in ents:
                if e & 1 and not (pse and e & 0x80):
                    pages.add(e & 0xFFFFF000)  # leaf PT page (not descended)
        return pages

    def _walk64(self, table, level, pages):
        # level: 5=PML5 4=PML4 3=PDPT 2=PD 1=PT (PT pages are leaves: kept, not read)
        if table in pages:
            return
        pages.add(table)
        if level == 1:
            return
        ents = self._entries(table, 512, 8)
        if ents is None:
            return
        for e in ents:
            if not e & 1:
                continue
            if level in (3, 2) and e & 0x80:  # 1 GiB / 2 MiB page
                continue
            self._walk64(e & ADDR_MASK_64, level - 1, pages)

    def translate(self, va):
        """Linear -> physical address, or None if not mapped / not in image."""
        if self.mode == "none":
            return va
        if self.mode in ("4level", "5level"):
            levels = 5 if self.mode == "5level" else 4
            table = self.cr3 & ADDR_MASK_64
            for lvl in range(levels, 0, -1):
                shift = 12 + 9 * (lvl - 1)
                raw = self.core.read_phys(table + ((va >> shift) & 0x1FF) * 8, 8)
                if raw is None:
                    return None
                e = struct.unpack("<Q", raw)[0]
                if not e & 1:
                    return None
                if lvl in (3, 2) and e & 0x80:
                    return (e & ADDR_MASK_64 & ~((1 << shift) - 1)) | (va & ((1 << shift) - 1))
                table = e & ADDR_MASK_64
            return table | (va & 0xFFF)
        if self.mode == "pae":
            va &= 0xFFFFFFFF
            raw = self.core.read_phys((self.cr3 & 0xFFFFFFE0) + (va >> 30) * 8, 8)
            if raw is None:
                return None
            e = struct.unpack("<Q", raw)[0]
            if not e & 1:
                return None
            for shift in (21, 12):
                raw = self.core.read_phys((e & ADDR_MASK_64) + ((va >> shift) & 0x1FF) * 8, 8)
                if raw is None:
                    return None
                e = struct.unpack("<Q", raw)[0]
                if not e & 1:
                    return None
                if shift == 21 and e & 0x80:
                    return (e & ADDR_MASK_64 & ~0x1FFFFF) | (va & 0x1FFFFF)
            return (e & ADDR_MASK_64) | (va & 0xFFF)
        # 2-level
        va &= 0xFFFFFFFF
        raw = self.core.read_phys((self.cr3 & 0xFFFFF000) + (va >> 22) * 4, 4)
        if raw is None:
            return None
        e = struct.unpack("<I", raw)[0]
        if not e & 1:
            return None
        if self.cr4 & (1 << 4) and e & 0x80:
            # PSE-36: bits 13..20 of the PDE are physical bits 32..39
            return (e & 0xFFC00000) | (((e >> 13) & 0xFF) << 32) | (va & 0x3FFFFF)
        raw = self.core.read_phys((e & 0xFFFFF000) + ((va >> 12) & 0x3FF) * 4, 4)
        if raw is None:
            return None
        e = struct.unpack("<I", raw)[0]
        if not e & 1:
            return None
        return (e & 0xFFFFF000) | (va & 0xFFF)

    def range_pages(self, base, limit):
        """Physical pages backing linear [base, base+limit]; None for holes."""
        out = []
        va = base & ~0xFFF
        end = base + limit
        while va <= end:
            pa = self.translate(va)
            out.append(None if pa is None else pa & ~0xFFF)
            va += PAGE
        return out


# ---------------------------------------------------------------------------
# HMP text parsing
# ---------------------------------------------------------------------------

def parse_info_registers(text):
    regs = {}
    for m in re.finditer(r"\b(CR[0-4]|EFER|DR[0-7])=([0-9a-fA-F]+)", text):
        regs[m.group(1)] = int(m.group(2), 16)
    for m in re.finditer(r"^(GDT|IDT)=\s+([0-9a-fA-F]+) ([0-9a-fA-F]+)", text, re.M):
        regs[m.group(1)] = dict(base=int(m.group(2), 16), limit=int(m.group(3), 16),
                                text=m.group(0))
    for m in re.finditer(r"^(ES|CS|SS|DS|FS|GS|LDT|TR)\s*=([0-9a-fA-F]+) ([0-9a-fA-F]+) "
                         r"([0-9a-fA-F]+) ([0-9a-fA-F]+)(.*)$", text, re.M):
        regs[m.group(1)] = dict(selector=int(m.group(2), 16), base=int(m.group(3), 16),
                                limit=int(m.group(4), 16), flags=int(m.group(5), 16),
                                text=m.group(0).rstrip())
    return regs


_TLB_RE = re.compile(r"^([0-9a-fA-F]+): ([0-9a-fA-F]+) ")


def parse_info_tlb(text, limit=None):
    out = []
    for line in text.splitlines():
        m = _TLB_RE.match(line)
        if m:
            out.append((int(m.group(1), 16), int(m.group(2), 16), line))
            if limit and len(out) >= limit:
                break
    return out


# ---------------------------------------------------------------------------
# Host prerequisites and Debian packages
# ---------------------------------------------------------------------------

def check_host(profiles):
    missing = []
    for tool, pkg in (("apt-get", "apt"), ("apt-cache", "apt"), ("dpkg", "dpkg"),
                      ("dpkg-deb", "dpkg")):
        if shutil.which(tool) is None:
            missing.append("%s (package %s)" % (tool, pkg))
    for q in sorted({PROFILES[p]["qemu"] for p in profiles}):
        if shutil.which(q) is None:
            missing.append("%s (apt-get install -y qemu-system-x86)" % q)
    if missing:
        raise FixtureError("missing host tools: " + "; ".join(missing))


class DebianFetcher:
    """apt-get download + dpkg -x using a private apt state dir per arch.

    A private state dir means no root, no change to the host's apt config and
    no ``dpkg --add-architecture i386`` (which can make apt want to remove
    packages while the mirror is mid-sync)."""

    def __init__(self, cache, arch, refresh=False):
        self.cache, self.arch = cache, arch
        self.base = os.path.join(cache, "apt", arch)
        self.debs = os.path.join(cache, "debs")
        self.roots = os.path.join(cache, "root")
        for d in (os.path.join(self.base, "lists", "partial"),
                  os.path.join(self.base, "archives", "partial"), self.debs, self.roots):
            os.makedirs(d, exist_ok=True)
        status = os.path.join(self.base, "status")
        if not os.path.exists(status):
            open(status, "w").close()  # empty dpkg status: nothing "installed"
        self.opts = [
            "-o", "APT::Architecture=" + arch,
            "-o", "APT::Architectures::=" + arch,
            "-o", "Dir::State::Lists=" + os.path.join(self.base, "lists"),
            "-o", "Dir::State::status=" + status,
            "-o", "Dir::Cache=" + self.base,
            "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
            "-o", "APT::Sandbox::User=root" if os.geteuid() == 0 else "Debug::NoLocking=0",
        ]
        lists = [f for f in os.listdir(os.path.join(self.base, "lists")) if f.endswith(
            ("Packages", "Packages.lz4", "Packages.xz", "Packages.gz"))]
        if refresh or not lists:
            self.update()

    def update(self):
        log("apt-get update (private state for %s)" % self.arch)
        r = subprocess.run(["apt-get", "-q"] + self.opts + ["update"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            # One failed index (e.g. security mirror mid-sync) is not fatal as
            # long as the packages we need are found in the others.
            errs = [l for l in r.stdout.splitlines() if l.startswith(("E:", "Err"))]
            log("warning: apt-get update returned %d: %s" % (r.returncode, " | ".join(errs)[:400]))

    def search(self, regex):
        r = subprocess.run(["apt-cache"] + self.opts + ["search", "--names-only", regex],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return [l.split(" - ", 1)[0] for l in r.stdout.splitlines() if l.strip()]

    def latest_kernel(self, flavour, abi=None):
        names = self.search(r"^linux-image-[0-9.]+-[0-9]+-%s$" % re.escape(flavour))
        if abi:
            names = [n for n in names if n == "linux-image-%s-%s" % (abi, flavour)]
        if not names:
            return None

        def key(n):
            return [int(x) for x in re.findall(r"\d+", n[len("linux-image-"):-len(flavour)])]
        return max(names, key=key)

    def fetch(self, pkg):
        """Download pkg (latest version) and unpack it; returns (root, version, deb)."""
        r = subprocess.run(["apt-cache"] + self.opts + ["show", "--no-all-versions", pkg],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        m = re.search(r"^Version: (\S+)", r.stdout, re.M)
        if r.returncode != 0 or not m:
            raise SkipProfile("package %s (%s) not available from apt: %s"
                              % (pkg, self.arch, r.stderr.strip()[:300]))
        version = m.group(1)
        tag = "%s_%s_%s" % (pkg, version.replace(":", "%3a"), self.arch)
        root = os.path.join(self.roots, tag)
        debs = [f for f in os.listdir(self.debs)
                if f.startswith(pkg + "_" + version.split(":")[-1]) or
                f.startswith(pkg + "_" + version.replace(":", "%3a"))]
        debs = [f for f in debs if f.endswith("_%s.deb" % self.arch)]
        if not debs:
            log("apt-get download %s (%s) %s" % (pkg, self.arch, version))
            r = subprocess.run(["apt-get", "-q"] + self.opts + ["download", "%s=%s" % (pkg, version)],
                               cwd=self.debs, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
            debs = [f for f in os.listdir(self.debs) if f.startswith(pkg + "_") and
                    f.endswith("_%s.deb" % self.arch) and
                    version.split(":")[-1] in f]
            if r.returncode != 0 or not debs:
                raise SkipProfile("apt-get download %s:%s failed: %s"
                                  % (pkg, self.arch, r.stdout.strip()[-400:]))
        deb = os.path.join(self.debs, debs[0])
        if not os.path.isdir(root):
            tmp = root + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            subprocess.run(["dpkg", "-x", deb, tmp], check=True)
            os.rename(tmp, root)
        return root, version, deb


# ---------------------------------------------------------------------------
# initramfs (cpio newc written in Python, gzip)
# ---------------------------------------------------------------------------

INIT_SCRIPT = """#!/bin/busybox sh
# ksinspect fixture init: no symlinks are installed, so every applet is
# called as "busybox <applet>".
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
# Root with kptr_restrict=0 sees real addresses in /proc/kallsyms.
echo 0 > /proc/sys/kernel/kptr_restrict
# Raw mode: no \\n -> \\r\\n translation on the symbol stream.
$bb stty -F /dev/ttyS1 raw -echo
$bb cat /proc/kallsyms > /dev/ttyS1
echo %(end)s > /dev/ttyS1
echo %(ready)s
# Idle blocked in the kernel: read() on a console that never gets input
# (QEMU's serial backend is a file).  Sleep forever if read ever returns.
read -r line < /dev/console
while :; do $bb sleep 3600; done
""" % dict(end=KALLSYMS_END, ready=READY_MARKER)


def _cpio_entry(name, mode, data=b"", rdev=(0, 0), ino=[1]):
    ino[0] += 1
    nameb = name.encode() + b"\0"
    hdr = "070701" + "".join("%08X" % v for v in (
        ino[0], mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nameb), 0))
    out = hdr.encode() + nameb
    out += b"\0" * (-len(out) % 4)
    out += data + b"\0" * (-len(data) % 4)
    return out


def build_initramfs(busybox_path, dest):
    with open(busybox_path, "rb") as f:
        bb = f.read()
    parts = [
        _cpio_entry(".", 0o40755), _cpio_entry("bin", 0o40755),
        _cpio_entry("bin/busybox", 0o100755, bb),
        _cpio_entry("init", 0o100755, INIT_SCRIPT.encode()),
        _cpio_entry("dev", 0o40755),
        # The kernel opens /dev/console before running /init.
        _cpio_entry("dev/console", 0o20600, rdev=(5, 1)),
        _cpio_entry("proc", 0o40755), _cpio_entry("sys", 0o40755),
        _cpio_entry("TRAILER!!!", 0),
    ]
    with open(dest, "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
            gz.write(b"".join(parts))


# ---------------------------------------------------------------------------
# QMP
# ---------------------------------------------------------------------------

class QMP:
    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        greeting = self._recv()
        if "QMP" not in greeting:
            raise FixtureError("unexpected QMP greeting: %r" % greeting)
        self.cmd("qmp_capabilities")

    def _recv(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise FixtureError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, execute, timeout=None, **arguments):
        msg = {"execute": execute}
        if arguments:
            msg["arguments"] = arguments
        self.sock.settimeout(timeout or 30)
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._recv()
            if "event" in r:
                continue  # asynchronous events (STOP, DUMP_COMPLETED, ...)
            if "error" in r:
                raise FixtureError("QMP %s failed: %s" % (execute, r["error"]))
            return r.get("return")

    def hmp(self, command, timeout=None):
        out = self.cmd("human-monitor-command", timeout=timeout, **{"command-line": command})
        return out.replace("\r\n", "\n")  # monitor output uses CRLF

    def close(self):
        self.sock.close()


# ---------------------------------------------------------------------------
# Boot + capture
# ---------------------------------------------------------------------------

def qemu_version(binary):
    r = subprocess.run([binary, "--version"], stdout=subprocess.PIPE, text=True)
    return r.stdout.splitlines()[0].strip()


def wait_for(pred, timeout, proc, what):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return time.time() - t0
        if proc.poll() is not None:
            raise FixtureError("QEMU exited (rc=%s) while waiting for %s" % (proc.returncode, what))
        time.sleep(0.25)
    raise FixtureError("timed out after %ds waiting for %s" % (timeout, what))


def file_contains(path, needle):
    try:
        with open(path, "rb") as f:
            return needle.encode() in f.read()
    except FileNotFoundError:
        return False


def boot_and_capture(prof, vmlinuz, initrd, work, boot_timeout, kdump=False):
    qmp_path = os.path.join(work, "qmp.sock")
    console = os.path.join(work, "console.log")
    ksyms = os.path.join(work, "kallsyms.raw")
    core = os.path.join(work, "core.elf")
    for p in (qmp_path, console, ksyms, core):
        if os.path.exists(p):
            os.unlink(p)
    # As in FIXTURES.md, but serial ports go to files instead of -nographic's
    # stdio: ttyS0 then never receives input, so the guest's read() blocks
    # forever, and ttyS1 carries /proc/kallsyms.
    argv = [prof["qemu"], "-accel", "tcg", "-machine", "pc", "-cpu", prof["cpu"],
            "-smp", "1", "-m", "128M", "-display", "none", "-monitor", "none",
            "-no-reboot", "-kernel", vmlinuz, "-initrd", initrd,
            "-append", kernel_append(prof),
            "-serial", "file:" + console, "-serial", "file:" + ksyms,
            "-qmp", "unix:%s,server=on,wait=off" % qmp_path]
    log("boot: " + " ".join(shlex.quote(a) for a in argv))
    t0 = time.time()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    cap = dict(argv=argv)
    try:
        wait_for(lambda: file_contains(console, READY_MARKER), boot_timeout, proc,
                 "the %s marker" % READY_MARKER)
        cap["boot_seconds"] = round(time.time() - t0, 1)
        log("guest ready after %.1fs" % cap["boot_seconds"])
        # The marker is printed after cat returned, but the tty may still be
        # draining: wait for the end-of-symbols line on ttyS1.
        wait_for(lambda: file_contains(ksyms, KALLSYMS_END), 120, proc, "end of kallsyms")
        time.sleep(1.0)  # let the shell reach its blocking read()
        q = QMP(qmp_path)
        q.cmd("stop")  # one frozen CPU state for every artefact below
        status = q.cmd("query-status")
        if status.get("running"):
            raise FixtureError("VM still running after stop")
        cap["info_registers"] = q.hmp("info registers")
        cap["info_tlb"] = q.hmp("info tlb", timeout=300)
        t1 = time.time()
        # Absolute path works over QMP (HMP would parse '/' as division).
        q.cmd("dump-guest-memory", timeout=600, paging=False, protocol="file:" + core)
        cap["dump_seconds"] = round(time.time() - t1, 1)
        if kdump:
            # The same stopped state as a compressed kdump: QEMU 7.2 writes makedumpfile's
            # flattened format and offers only zlib (query-dump-guest-memory-capability).
            kdump_path = os.path.join(work, "core.kdump-zlib")
            if os.path.exists(kdump_path):
                os.unlink(kdump_path)
            q.cmd("dump-guest-memory", timeout=600, paging=False, format="kdump-zlib",
                  protocol="file:" + kdump_path)
            cap["kdump_path"] = kdump_path
        if prof["paging"] == "5level":
            # QEMU 7.2's 'info mem' never finishes under LA57; a hung HMP
            # command would also block 'quit', so don't even try.
            cap["info_mem"] = None
            cap["info_mem_skipped"] = "QEMU 7.2 'info mem' does not work under 5-level paging"
        else:
            try:
                cap["info_mem"] = q.hmp("info mem", timeout=180)
            except (socket.timeout, OSError) as e:
                cap["info_mem"] = None
                cap["info_mem_skipped"] = "info mem timed out: %s" % e
        try:
            q.cmd("quit")
        except Exception:
            pass
        q.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with open(console, "rb") as f:
        cap["console"] = f.read().decode("utf-8", "replace").replace("\r\n", "\n")
    with open(ksyms, "rb") as f:
        raw = f.read().decode("ascii", "replace").replace("\r", "")
    raw = raw.split(KALLSYMS_END)[0]
    cap["kallsyms"] = raw
    cap["core_path"] = core
    return cap


# ---------------------------------------------------------------------------
# Core post-processing
# ---------------------------------------------------------------------------

def cpu_context(core, regs=None):
    """CR0/CR3/CR4, long mode and paging mode from the core's QEMU note."""
    st = core.qemu_cpu_states()
    if not st:
        raise FixtureError("no QEMU CPU-state note in core")
    st = st[0]
    cr0, cr3, cr4 = st["cr"][0], st["cr"][3], st["cr"][4]
    if regs and "EFER" in regs:
        long_mode = bool(regs["EFER"] & (1 << 10))  # EFER.LMA
    else:
        long_mode = core.e_machine == EM_X86_64
    return st, paging_mode(cr0, cr4, long_mode)


def select_pages(core, regs=None, pti=False):
    """Physical pages to keep, by reason (with ``pti``, also the tables of the
    user PGD that pairs with the kernel PGD in CR3)."""
    st, mode = cpu_context(core, regs)
    w = Walker(core, mode, st["cr"][3], st["cr"][4])
    kept = {}
    for pa in w.table_pages():
        if core.find_load(pa) is not None:
            kept.setdefault(pa, set()).add("page-table")
    if pti and mode in ("4level", "5level"):
        user_cr3 = (st["cr"][3] & ADDR_MASK_64 & ~0x1FFF) | PTI_USER_PGD_OFFSET
        for pa in Walker(core, mode, user_cr3, st["cr"][4]).table_pages():
            if core.find_load(pa) is not None:
                kept.setdefault(pa, set()).add("page-table (PTI user CR3)")
    missing = []
    for what in ("gdt", "idt", "tr"):
        seg = st[what]
        for i, pa in enumerate(w.range_pages(seg["base"], seg["limit"])):
            if pa is None or core.find_load(pa) is None:
                missing.append("%s page %d" % (what, i))
                continue
            kept.setdefault(pa, set()).add({"tr": "tss"}.get(what, what))
    # TSSs that IDT task gates name (the i386 double-fault task, SDM vol. 3A §6.15):
    # their GDT descriptors give base and limit; keep their first 104 bytes.
    # The task's own CR3 (TSS offset 0x1C, SDM vol. 3A Figure 8-2) is loaded on
    # the switch: keep its tables too, so the task's EIP and stack translate
    # through them (swapper_pg_dir on Linux: mostly the same kernel tables).
    for base in task_gate_tss_bases(core, w, st):
        for i, pa in enumerate(w.range_pages(base, 0x67)):
            if pa is not None and core.find_load(pa) is not None:
                kept.setdefault(pa, set()).add("task-gate-tss")
        tss = read_linear(core, w, base, 0x20)
        if len(tss) == 0x20:
            task_cr3 = struct.unpack_from("<I", tss, 0x1C)[0]
            for pa in Walker(core, mode, task_cr3, st["cr"][4]).table_pages():
                if core.find_load(pa) is not None:
                    kept.setdefault(pa, set()).add("page-table (task-gate TSS CR3)")
    return kept, mode, missing


def read_linear(core, w, base, size):
    """Bytes at linear [base, base+size) through the walker; stops at the first hole."""
    out = b""
    while len(out) < size:
        va = base + len(out)
        pa = w.translate(va)
        n = min(size - len(out), PAGE - (va & 0xFFF))
        raw = None if pa is None else core.read_phys(pa, n)
        if raw is None:
            break
        out += raw
    return out


def task_gate_tss_bases(core, w, st):
    """Linear bases of the TSS descriptors that IDT task gates (type 5) select.
    Only legacy IDTs (8-byte gates) have task gates; IA-32e mode has none."""
    if core.e_machine == EM_X86_64:
        return []
    idt = read_linear(core, w, st["idt"]["base"], st["idt"]["limit"] + 1)
    gdt = read_linear(core, w, st["gdt"]["base"], st["gdt"]["limit"] + 1)
    bases = []
    for off in range(0, len(idt) - 7, 8):
        lo, hi = struct.unpack_from("<II", idt, off)
        if (hi >> 8) & 0x1F != 0x05 or not hi >> 15 & 1:
            continue
        sel = (lo >> 16) & 0xFFF8
        if sel + 8 > len(gdt):
            continue
        dlo, dhi = struct.unpack_from("<II", gdt, sel)
        if (dhi >> 8) & 0x15 == 0x01:          # S=0, type 1/3/9/11: a TSS
            bases.append((dlo >> 16) | (dhi & 0xFF) << 16 | (dhi & 0xFF000000))
    return bases


def write_trimmed(core, kept, dest):
    """Same ELF header/notes, PT_LOADs only for the kept pages (runs)."""
    runs = []  # [paddr, size, src_offset, src_vaddr_or_0]
    for pa in sorted(kept):
        p = core.find_load(pa)
        off = p["offset"] + (pa - p["paddr"])
        va = p["vaddr"] + (pa - p["paddr"]) if p["vaddr"] else 0
        if runs and runs[-1][0] + runs[-1][1] == pa and runs[-1][2] + runs[-1][1] == off:
            runs[-1][1] += PAGE
        else:
            runs.append([pa, PAGE, off, va])
    notes = [p for p in core.phdrs if p["type"] == PT_NOTE]
    phnum = len(notes) + len(runs)
    ehsize = struct.calcsize(core.ehdr_fmt)
    phent = struct.calcsize(core.phdr_fmt)
    ehdr = struct.pack(core.ehdr_fmt, core.ident, core.e_type, core.e_machine, core.e_version,
                       core.e_entry, ehsize, 0, core.e_flags, ehsize, phent, phnum, 0, 0, 0)
    pos = ehsize + phent * phnum
    phdrs, blobs = [], []

    def ph(p_type, flags, off, vaddr, paddr, filesz, memsz, align):
        if core.elfclass == 2:
            return struct.pack(core.phdr_fmt, p_type, flags, off, vaddr, paddr, filesz, memsz, align)
        return struct.pack(core.phdr_fmt, p_type, off, vaddr, paddr, filesz, memsz, flags, align)

    for n in notes:  # notes copied byte for byte
        blob = bytes(core.data[n["offset"]:n["offset"] + n["filesz"]])
        phdrs.append(ph(PT_NOTE, n["flags"], pos, n["vaddr"], n["paddr"], len(blob),
                        len(blob), n["align"]))
        blobs.append(blob)
        pos += len(blob)
    pad = -pos % PAGE  # page-align the data like QEMU does
    blobs.append(b"\0" * pad)
    pos += pad
    for paddr, size, off, va in runs:
        phdrs.append(ph(PT_LOAD, 0, pos, va, paddr, size, size, 0))
        blobs.append(bytes(core.data[off:off + size]))
        pos += size
    data = ehdr + b"".join(phdrs) + b"".join(blobs)
    with open(dest, "wb") as f:
        f.write(data)
    return data, runs


def xz_file(src, dest, preset=6):
    c = lzma.LZMACompressor(preset=preset)
    with open(src, "rb") as fi, open(dest, "wb") as fo:
        for chunk in iter(lambda: fi.read(1 << 22), b""):
            fo.write(c.compress(chunk))
        fo.write(c.flush())
    return os.path.getsize(dest)


def write_text(outdir, name, text, xz_over=256 * 1024):
    """Write name, or name.xz when large; remove the other variant."""
    data = text.encode()
    for n in (name, name + ".xz"):
        p = os.path.join(outdir, n)
        if os.path.exists(p):
            os.unlink(p)
    if len(data) > xz_over:
        name += ".xz"
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(lzma.compress(data, preset=9))
    else:
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(data)
    return name


# ---------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------

def verify_profile(outdir, tlb_lines=64):
    """Cross-check a fixture directory; returns a list of problems (empty = ok)."""
    problems = []
    regs_txt = read_text_fixture(outdir, "info-registers.txt")
    if regs_txt is None:
        return ["no info-registers.txt"]
    regs = parse_info_registers(regs_txt)
    cores = [n for n in ("core-trimmed.elf.xz", "core.elf.xz") if
             os.path.exists(os.path.join(outdir, n))]
    if not cores:
        return ["no core file"]
    tlb = parse_info_tlb(read_text_fixture(outdir, "info-tlb.txt") or "", tlb_lines)
    meta = {}
    if os.path.exists(os.path.join(outdir, "meta.json")):
        with open(os.path.join(outdir, "meta.json")) as f:
            meta = json.load(f)
    if not tlb:
        problems.append("info tlb has no parsable lines")
    for name in cores:
        with lzma.open(os.path.join(outdir, name)) as f:
            core = ElfCore(f.read())
        st, mode = cpu_context(core, regs)
        want = meta.get("core_full", {}).get("notes_sha256")
        got = hashlib.sha256(b"".join(core.note_bytes())).hexdigest()
        if want and want != got:
            problems.append("%s: notes differ from the full core's" % name)
        if meta and mode != meta.get("paging_mode"):
            problems.append("%s: paging mode %s != meta %s" % (name, mode, meta.get("paging_mode")))
        if st["version"] != 1:
            problems.append("%s: QEMU note version %d" % (name, st["version"]))
        for i in (0, 3, 4):
            if regs.get("CR%d" % i) != st["cr"][i]:
                problems.append("%s: CR%d note %#x != info registers %#x"
                                % (name, i, st["cr"][i], regs.get("CR%d" % i, -1)))
        for seg, key in (("gdt", "GDT"), ("idt", "IDT")):
            if (regs[key]["base"], regs[key]["limit"]) != (st[seg]["base"], st[seg]["limit"]):
                problems.append("%s: %s mismatch note=%#x/%#x regs=%#x/%#x" % (
                    name, key, st[seg]["base"], st[seg]["limit"],
                    regs[key]["base"], regs[key]["limit"]))
        if regs["TR"]["base"] != st["tr"]["base"]:
            problems.append("%s: TR base mismatch" % name)
        w = Walker(core, mode, st["cr"][3], st["cr"][4])
        bad = 0
        for va, pa_txt, line in tlb:
            pa = w.translate(va)
            # QEMU 7.2 PAE 'info tlb' leaves NX in the phys column: mask it.
            if pa is None or (pa & ADDR_MASK_64) != (pa_txt & ADDR_MASK_64):
                bad += 1
                if bad <= 3:
                    problems.append("%s: walker %s for tlb line %r" % (
                        name, "no mapping" if pa is None else "%#x" % pa, line))
        for seg in ("gdt", "idt", "tr"):
            for i, pa in enumerate(w.range_pages(st[seg]["base"], st[seg]["limit"])):
                if pa is None or core.read_phys(pa, PAGE) is None:
                    problems.append("%s: %s page %d not in image" % (name, seg, i))
        log("verify %s/%s: mode=%s cr3=%#x gdt=%#x/%#x, %d tlb lines walked, %d bad"
            % (os.path.basename(outdir), name, mode, st["cr"][3], st["gdt"]["base"],
               st["gdt"]["limit"], len(tlb), bad))
    ks = read_text_fixture(outdir, "kallsyms.txt")
    if ks is None:
        problems.append("no kallsyms")
    else:
        addrs = [l.split(" ", 1)[0] for l in ks.splitlines()[:2000]]
        if not addrs or all(set(a) <= {"0"} for a in addrs):
            problems.append("kallsyms addresses are all zero")
    return problems


# ---------------------------------------------------------------------------
# Main per-profile flow
# ---------------------------------------------------------------------------

def run_profile(name, args):
    prof = PROFILES[name]
    outdir = os.path.join(args.out, name)
    fetch = DebianFetcher(args.cache, prof["arch"], refresh=args.refresh)
    kpkg = fetch.latest_kernel(prof["flavour"], args.kernel_abi)
    if kpkg is None:
        raise SkipProfile("no linux-image-*-%s package for %s in the apt lists"
                          % (prof["flavour"], prof["arch"]))
    kroot, kver, kdeb = fetch.fetch(kpkg)
    broot, bver, _ = fetch.fetch("busybox-static")
    abi_flavour = kpkg[len("linux-image-"):]
    vmlinuz = os.path.join(kroot, "boot", "vmlinuz-" + abi_flavour)
    if not os.path.exists(vmlinuz):
        raise SkipProfile("no %s in %s" % (vmlinuz, kdeb))
    work = os.path.join(args.cache, "work", name)
    os.makedirs(work, exist_ok=True)
    initrd = os.path.join(work, "initrd.gz")
    build_initramfs(os.path.join(broot, "bin", "busybox"), initrd)
    log("%s: kernel %s %s, busybox-static %s, initrd %d bytes"
        % (name, kpkg, kver, bver, os.path.getsize(initrd)))

    cap = boot_and_capture(prof, vmlinuz, initrd, work, args.boot_timeout, args.kdump)
    regs = parse_info_registers(cap["info_registers"])
    core_path = cap["core_path"]
    with open(core_path, "rb") as f:
        core = ElfCore(f.read())
    st, mode = cpu_context(core, regs)
    if mode != prof["paging"]:
        raise FixtureError("%s: guest runs %s paging, expected %s (CR4=%#x)"
                           % (name, mode, prof["paging"], st["cr"][4]))
    kept, _, missing = select_pages(core, regs, pti="pti=on" in kernel_append(prof))
    if missing:
        log("warning: not in image: " + ", ".join(missing))

    os.makedirs(outdir, exist_ok=True)
    for stale in ("core.elf.xz", "core-trimmed.elf.xz", "info-mem.txt", "info-mem.txt.xz"):
        if os.path.exists(os.path.join(outdir, stale)):
            os.unlink(os.path.join(outdir, stale))
    files = {}
    files["info_registers"] = write_text(outdir, "info-registers.txt", cap["info_registers"],
                                         xz_over=1 << 30)
    files["info_tlb"] = write_text(outdir, "info-tlb.txt", cap["info_tlb"])
    if cap.get("info_mem") is not None:
        files["info_mem"] = write_text(outdir, "info-mem.txt", cap["info_mem"])
    files["kallsyms"] = write_text(outdir, "kallsyms.txt", cap["kallsyms"], xz_over=0)
    files["console"] = write_text(outdir, "console.log", cap["console"], xz_over=0)

    # Trimmed core (always: small and enough for GDT/IDT/page-table work).
    trimmed_raw = os.path.join(work, "core-trimmed.elf")
    tdata, runs = write_trimmed(core, kept, trimmed_raw)
    tsize = xz_file(trimmed_raw, os.path.join(outdir, "core-trimmed.elf.xz"), preset=9)
    files["core_trimmed"] = "core-trimmed.elf.xz"
    # Full core: compress into the cache; commit it only if small enough.
    full_xz = os.path.join(work, "core.elf.xz")
    t = time.time()
    log("compressing the full %d-byte core with xz ..." % os.path.getsize(core_path))
    full_size = xz_file(core_path, full_xz, preset=6)
    log("full core: %.1f MB xz in %.0fs" % (full_size / 1e6, time.time() - t))
    full_committed = full_size <= args.max_full_mb * 1e6
    if full_committed:
        shutil.copyfile(full_xz, os.path.join(outdir, "core.elf.xz"))
        files["core_full"] = "core.elf.xz"

    reasons = {}
    for pa, why in kept.items():
        for r in why:
            reasons[r] = reasons.get(r, 0) + 1
    meta = {
        "profile": name,
        "description": prof["doc"],
        "generated_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "generator": "tools/make_qemu_fixture.py",
        "regenerate": "python3 tools/make_qemu_fixture.py --profile " + name,
        "kernel": {"package": kpkg, "version": kver, "arch": prof["arch"],
                   "deb": os.path.basename(kdeb), "vmlinuz_sha256": sha256_file(vmlinuz)},
        "busybox": {"package": "busybox-static", "version": bver, "arch": prof["arch"]},
        "qemu": {"binary": prof["qemu"], "version": qemu_version(prof["qemu"])},
        "cpu_model": prof["cpu"],
        "machine": "pc", "memory": "128M", "smp": 1, "accel": "tcg",
        "kernel_append": kernel_append(prof),
        # Paths under the cache dir are written as $CACHE so meta.json does
        # not depend on who ran the script.
        "command_line": " ".join(shlex.quote(a).replace(os.path.abspath(args.cache), "$CACHE")
                                 for a in cap["argv"]),
        "cache_layout": "$CACHE = --cache (default ~/.cache/ksinspect-fixtures)",
        "boot_seconds_to_marker": cap["boot_seconds"],
        "dump_seconds": cap["dump_seconds"],
        "paging_mode": mode,
        "stopped_state": "CPU halted in the kernel idle loop while /init blocks in read() "
                         "on the console; CR3 is whatever the idle task inherited",
        "kallsyms_lines": cap["kallsyms"].count("\n"),
        "info_tlb_lines": cap["info_tlb"].count("\n"),
        "registers": {k: ("%#x" % v if isinstance(v, int) else v["text"])
                      for k, v in regs.items()
                      if k in ("CR0", "CR2", "CR3", "CR4", "EFER", "GDT", "IDT", "TR", "CS")},
        "qemu_note": {"version": st["version"], "size": st["size"],
                      "cr": ["%#x" % c for c in st["cr"]],
                      "gdt": {k: "%#x" % v for k, v in st["gdt"].items()},
                      "idt": {k: "%#x" % v for k, v in st["idt"].items()},
                      "tr": {k: "%#x" % v for k, v in st["tr"].items()}},
        "core_full": {"elf_class": core.elfclass * 32, "e_machine": core.e_machine,
                      "size": os.path.getsize(core_path), "sha256": sha256_file(core_path),
                      "xz_size": full_size, "committed": full_committed,
                      "notes_sha256": hashlib.sha256(b"".join(core.note_bytes())).hexdigest(),
                      "pt_load": [{"paddr": "%#x" % p["paddr"], "size": p["filesz"]}
                                  for p in core.loads]},
        "core_trimmed": {"size": len(tdata), "sha256": hashlib.sha256(tdata).hexdigest(),
                         "xz_size": tsize, "pages_kept": len(kept),
                         "pages_by_reason": reasons, "pt_load_runs": len(runs),
                         "not_in_image": missing},
        "info_mem_skipped": cap.get("info_mem_skipped"),
        "files": files,
    }
    with open(os.path.join(outdir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=False)
        f.write("\n")
    if not args.keep_raw:
        os.unlink(core_path)
    problems = verify_profile(outdir)
    if problems:
        raise FixtureError("verification failed for %s:\n  " % name + "\n  ".join(problems))
    return meta


def retrim_profile(name, args):
    """Rebuild <out>/<name>/core-trimmed.elf.xz from the full core of the same
    capture (``core.elf.xz`` in --out or in the cache work dir) with the page
    selection of this version of the tool, without booting; meta.json's
    ``core_trimmed`` is updated. The full core's notes must be the ones
    meta.json recorded, so the trimmed core stays one CPU state with the
    other files of the profile."""
    prof = PROFILES[name]
    outdir = os.path.join(args.out, name)
    meta_path = os.path.join(outdir, "meta.json")
    with open(meta_path) as f:
        meta = json.load(f)
    for full in (os.path.join(outdir, "core.elf.xz"),
                 os.path.join(args.cache, "work", name, "core.elf.xz")):
        if os.path.exists(full):
            break
    else:
        raise SkipProfile("no full core for %s in %s or the cache" % (name, outdir))
    with lzma.open(full) as f:
        core = ElfCore(f.read())
    notes = hashlib.sha256(b"".join(core.note_bytes())).hexdigest()
    if notes != meta.get("core_full", {}).get("notes_sha256"):
        raise SkipProfile("%s is not the capture %s/meta.json describes (its notes differ)"
                          % (full, outdir))
    regs_txt = read_text_fixture(outdir, "info-registers.txt")
    regs = parse_info_registers(regs_txt) if regs_txt else None
    kept, _, missing = select_pages(core, regs, pti="pti=on" in kernel_append(prof))
    # Only --out is written: the cache may be someone else's (read it, never write it).
    with tempfile.TemporaryDirectory() as tmp:
        trimmed_raw = os.path.join(tmp, "core-trimmed.elf")
        tdata, runs = write_trimmed(core, kept, trimmed_raw)
        tsize = xz_file(trimmed_raw, os.path.join(outdir, "core-trimmed.elf.xz"), preset=9)
    reasons = {}
    for why in kept.values():
        for r in why:
            reasons[r] = reasons.get(r, 0) + 1
    meta["core_trimmed"] = {"size": len(tdata), "sha256": hashlib.sha256(tdata).hexdigest(),
                            "xz_size": tsize, "pages_kept": len(kept),
                            "pages_by_reason": reasons, "pt_load_runs": len(runs),
                            "not_in_image": missing, "retrimmed_from": os.path.basename(full)}
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=2, sort_keys=False)
        f.write("\n")
    log("%s: re-trimmed from %s: %d pages (%s)" % (name, full, len(kept), ", ".join(
        "%s %d" % kv for kv in sorted(reasons.items()))))
    problems = verify_profile(outdir)
    if problems:
        raise FixtureError("verification failed for %s:\n  " % name + "\n  ".join(problems))


# ---------------------------------------------------------------------------
# README for the fixture directory (regenerated from the meta.json files)
# ---------------------------------------------------------------------------

README_TEXT = """# Real QEMU guest fixtures

Generated by `tools/make_qemu_fixture.py`; do not edit by hand.  Regenerate
everything (about 5 minutes on 2 cores, TCG) from the repository root with

    python3 tools/make_qemu_fixture.py

or one profile with `--profile NAME`; `--verify-only` re-checks what is here.
The host needs `apt-get`, `dpkg` and `qemu-system-x86`
(`apt-get install -y qemu-system-x86`).  Kernels and busybox-static are
fetched with `apt-get download` against a private apt state directory in
the cache (`~/.cache/ksinspect-fixtures`, option `--cache`) and unpacked with
`dpkg -x`; nothing is installed and no foreign architecture is added.

## How each profile is captured

1. A 1 MB initramfs (cpio newc + gzip) holds Debian's static busybox as
   `/bin/busybox` and a shell script `/init` that mounts /proc, /sys and
   devtmpfs, sets `kernel.kptr_restrict=0`, copies `/proc/kallsyms` to the
   second serial port (ttyS1, a host file), prints `KSINSPECT-READY` on
   ttyS0 and then blocks in `read()` on the console, which never gets input.
2. QEMU boots the stock Debian kernel with
   `-accel tcg -machine pc -cpu <model> -smp 1 -m 128M -no-reboot
   -append "console=ttyS0 panic=-1 nokaslr"`, both serial ports to files
   and a QMP unix socket (exact command line in each `meta.json`).
3. After the marker and the end of the symbol stream, QMP `stop` freezes the
   VM, so every file below describes one CPU state: the CPU halted (HLT=1,
   CPL 0) in the kernel idle loop.  CR3 is whatever the idle task inherited
   (on these runs the last user process's page tables, so user mappings
   appear as well as kernel ones).
4. Over QMP: `human-monitor-command` `info registers`, `info tlb`, then
   `dump-guest-memory` with `paging=false` (an ELF core with QEMU's
   per-CPU `CORE`/NT_PRSTATUS and `QEMU` CPU-state notes), then `info mem`,
   then `quit`.  Monitor CRLF is normalised to LF.

## Files per profile directory

| file | content |
|---|---|
| `info-registers.txt` | `info registers` (plain text) |
| `info-tlb.txt[.xz]` | `info tlb`; xz when over 256 KiB (64-bit: 65,536 espfix aliases) |
| `info-mem.txt[.xz]` | `info mem`; absent under 5-level paging, where QEMU 7.2's `info mem` never finishes |
| `kallsyms.txt.xz` | the guest's whole `/proc/kallsyms` (nokaslr, so it equals System.map) |
| `console.log.xz` | boot log from ttyS0 |
| `core-trimmed.elf.xz` | trimmed ELF core, see below |
| `core.elf.xz` | the untrimmed core, only when it compresses to at most 15 MB (`--max-full-mb`) |
| `meta.json` | packages and versions, QEMU version, CPU model, command line, date, sha256 of the uncompressed cores, what was kept |

## What the trimmed core contains -- and what it does not

`core-trimmed.elf.xz` is derived from the full `dump-guest-memory` core
(about 151 MB: 128 MiB RAM, 16 MiB VGA memory and the BIOS ROM):

* the ELF header with the same `e_ident`, `e_type`, `e_machine`,
  `e_version`, `e_entry` and `e_flags` (only `e_phoff`/`e_phnum` differ, and
  there are no section headers);
* the PT_NOTE segment copied byte for byte (the `CORE` NT_PRSTATUS note and
  QEMU's `QEMUCPUState` note with segment caches, GDTR, IDTR, CR0-CR4);
  `meta.json` `core_full.notes_sha256` is the hash of the full core's notes;
* PT_LOAD segments (`p_paddr` = guest-physical address, `p_vaddr` as in the
  full core, i.e. 0) for these 4 KiB pages only, merged into runs:
  * every page-table page reachable from CR3 (CR3 from the QEMU note):
    PML5/PML4/PDPT/PD/PT pages (64-bit), the page holding the 32-byte PDPT
    plus PD/PT pages (PAE), or the page directory plus page tables (2-level).
    Entries mapping 1 GiB / 2 MiB / 4 MiB pages are not followed.  Both user
    and kernel halves are walked;
  * the pages backing the GDT, the IDT and the TSS (bases and limits from the
    QEMU note's `gdt`, `idt` and `tr`, linear addresses translated through
    the page tables above);
  * the first 104 bytes of every TSS an IDT task gate names (the i386
    double-fault task, GDT selector 0xF8);
  * for the `x86_64-pti` profile (built only by name, shipped in
    `tests/data/qemu-pti`), the page tables of the user CR3 too: with PTI
    the user PGD is the page after the kernel PGD.

Every other physical page -- kernel text and data (so IDT handler code),
stacks, the LDT, VGA memory, the ROM -- is simply absent from the image: a
reader must treat it as "not in the image", not as zeros.  The verifier
checks that every `info tlb` line translates identically through these page
tables, and that CR0/CR3/CR4, GDTR, IDTR and the TR base in the note match
`info registers`.

## QEMU 7.2 quirks visible in these files

* PAE `info tlb` prints the NX bit inside the physical-address column.
* `info registers` shows the cached TR as an *available* TSS while the GDT
  in memory says *busy*.
* The i386 cores are ELF64 with `e_machine` EM_386, because the BIOS ROM
  ends at 4 GiB.

## Profiles

"""


def write_readme(out):
    rows = ["| profile | kernel | CPU model | paging | CR0 / CR3 / CR4 / EFER | GDTR | IDTR "
            "| boot (s) | trimmed pages | full core |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name in PROFILES:
        mp = os.path.join(out, name, "meta.json")
        if not os.path.exists(mp):
            rows.append("| %s | not generated | | | | | | | | |" % name)
            continue
        with open(mp) as f:
            m = json.load(f)
        r = m["registers"]
        gdt = r["GDT"].split()[1:]
        idt = r["IDT"].split()[1:]
        full = m["core_full"]
        rows.append("| %s | %s %s | `%s` | %s | %s / %s / %s / %s | %s limit %s | %s limit %s "
                    "| %s | %d | %s |" % (
                        name, m["kernel"]["package"], m["kernel"]["version"], m["cpu_model"],
                        m["paging_mode"], r["CR0"], r["CR3"], r["CR4"], r["EFER"],
                        gdt[0], gdt[1], idt[0], idt[1], m["boot_seconds_to_marker"],
                        m["core_trimmed"]["pages_kept"],
                        ("committed, %.1f MB xz" if full["committed"] else
                         "not committed (%.1f MB xz)") % (full["xz_size"] / 1e6)))
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(README_TEXT + "\n".join(rows) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-p", "--profile", action="append", choices=list(PROFILES),
                    help="profile to build (repeatable; default: all, in order)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output dir (default %(default)s)")
    ap.add_argument("--cache", default=DEFAULT_CACHE,
                    help="download/unpack/work dir (default %(default)s)")
    ap.add_argument("--kernel-abi", help="pin the kernel ABI, e.g. 6.1.0-50 (default: latest)")
    ap.add_argument("--refresh", action="store_true", help="re-run the private apt-get update")
    ap.add_argument("--boot-timeout", type=int, default=180,
                    help="seconds to wait for the guest marker (default %(default)s)")
    ap.add_argument("--kdump", action="store_true",
                    help="also dump the stopped guest as a compressed kdump (QMP format "
                         "kdump-zlib) into the cache's work dir, for tools/make_kdump_fixture.py")
    ap.add_argument("--max-full-mb", type=float, default=15.0,
                    help="commit the untrimmed core.elf.xz only below this size (MB)")
    ap.add_argument("--keep-raw", action="store_true",
                    help="keep the uncompressed core in the cache work dir")
    ap.add_argument("--verify-only", action="store_true",
                    help="only verify existing fixtures in --out")
    ap.add_argument("--retrim", action="store_true",
                    help="rebuild each profile's core-trimmed.elf.xz from the full core of the "
                         "same capture (in --out or the cache), without booting")
    args = ap.parse_args(argv)
    # Extra profiles (x86_64-pti) are built only when asked for by name; they are
    # shipped in their own directory (tests/data/qemu-pti), beside the four.
    profiles = args.profile or [p for p in PROFILES if not PROFILES[p].get("extra")]

    if args.retrim:
        rc = 0
        for name in profiles:
            try:
                retrim_profile(name, args)
            except (SkipProfile, FixtureError, OSError) as e:
                log("%s: not re-trimmed: %s" % (name, e))
                rc = 1
        return rc

    if args.verify_only:
        rc = 0
        for name in profiles:
            d = os.path.join(args.out, name)
            if not os.path.isdir(d):
                log("%s: not present" % name)
                continue
            problems = verify_profile(d)
            log("%s: %s" % (name, "OK" if not problems else "FAILED"))
            for p in problems:
                log("  " + p)
                rc = 1
        return rc

    try:
        check_host(profiles)
    except FixtureError as e:
        log(str(e))
        return 2
    os.makedirs(args.cache, exist_ok=True)
    results, rc = {}, 0
    for name in profiles:
        t0 = time.time()
        try:
            meta = run_profile(name, args)
            results[name] = "ok (%s %s, boot %.0fs, total %.0fs)" % (
                meta["kernel"]["package"], meta["kernel"]["version"],
                meta["boot_seconds_to_marker"], time.time() - t0)
        except SkipProfile as e:
            results[name] = "SKIPPED: %s" % e
        except FixtureError as e:
            results[name] = "FAILED: %s" % e
            rc = 1
        log("%s: %s" % (name, results[name]))
    write_readme(args.out)
    log("summary:")
    for name, r in results.items():
        log("  %-14s %s" % (name, r))
    return rc


if __name__ == "__main__":
    sys.exit(main())
