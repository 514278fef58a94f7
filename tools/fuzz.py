#!/usr/bin/env python3
"""Build and run the libFuzzer harnesses of the C core (tests/fuzz/).

Every harness is linked with the csrc/ sources (the list in
csrc/build_core.py) under ``-fsanitize=fuzzer,address,undefined
-fno-sanitize-recover=undefined``: any out-of-bounds access, undefined
behaviour, leak, hang (``-timeout``), memory blow-up (``-rss_limit_mb``) or
broken invariant (FZ_CHECK in the harness) ends the run with the input that
caused it saved under ``BUILD/artifacts/``.

Usage::

    python3 tools/fuzz.py --seconds 5              # every harness, 5 s each (CI)
    python3 tools/fuzz.py --runs 10000000 --jobs 2 --nice 10   # the long run
    python3 tools/fuzz.py --only fuzz_translate --seconds 60
    python3 tools/fuzz.py --build-only
    python3 tools/fuzz.py --replay                 # the committed corpora, once each

Seeds come from tests/fuzz/corpus/<harness>/ (read only); inputs the fuzzer
finds go to BUILD/corpus/<harness>/ and are reused by the next run. The
build directory defaults to build/fuzz (git-ignored).

Adding a harness: write tests/fuzz/fuzz_<name>.c (see tests/fuzz/README.md)
and add one line to HARNESSES below.

Exit status: 0 when every harness ran clean, 1 on any crash, hang, leak,
out-of-memory or broken invariant, 2 when the toolchain is missing. The
last line is a one-line summary.
"""
import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ_DIR = os.path.join(ROOT, "tests", "fuzz")
CSRC = os.path.join(ROOT, "csrc")

# One line per harness: (name = tests/fuzz/<name>.c, -max_len for its inputs).
HARNESSES = (
    ("fuzz_selector", 1100),
    ("fuzz_descriptor", 8192),
    ("fuzz_pte", 4200),
    ("fuzz_debugreg", 2100),
    ("fuzz_translate", 45056),
    ("fuzz_mappings", 45056),
    ("fuzz_ptov", 45056),
    ("fuzz_read_virtual", 45056),
    ("fuzz_phys", 45056),
    ("fuzz_live", 300),
    ("fuzz_fields", 4096),
    ("fuzz_scan", 8192),
    ("fuzz_kdump", 65536),
    ("fuzz_kdump_reader", 65536),
    ("fuzz_control", 2100),
    ("fuzz_cpu_probe", 16),
    ("fuzz_page_cache", 4096),
)

SANITIZE = ["-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer"]
CFLAGS = ["-std=c99", "-g", "-O1", "-Wall", "-Wextra", "-Werror"]


def core_sources() -> List[str]:
    """The SOURCES list of csrc/build_core.py, read without importing cffi."""
    with open(os.path.join(CSRC, "build_core.py"), encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "SOURCES" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise SystemExit("fuzz: csrc/build_core.py has no SOURCES list")


def package_version() -> str:
    with open(os.path.join(ROOT, "ksinspect", "_version.py"), encoding="utf-8") as fh:
        return re.search(r'__version__ = "([^"]+)"', fh.read()).group(1)


def check_listed() -> None:
    """Every tests/fuzz/fuzz_*.c is a listed harness and every listed one exists."""
    on_disk = {f[:-2] for f in os.listdir(FUZZ_DIR) if f.startswith("fuzz_") and f.endswith(".c")}
    listed = {name for name, _ in HARNESSES}
    if on_disk != listed:
        raise SystemExit("fuzz: harness files and tools/fuzz.py HARNESSES differ: not listed %s, "
                         "missing %s" % (sorted(on_disk - listed), sorted(listed - on_disk)))


def find_clang(explicit: Optional[str]) -> Optional[str]:
    for name in ([explicit] if explicit else []) + ["clang", "clang-14", "clang-15", "clang-16"]:
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


def toolchain_problem(clang: Optional[str]) -> Optional[str]:
    """None when clang can link a libFuzzer program, else why not."""
    if clang is None:
        return "clang not found (apt-get install clang libclang-rt-14-dev)"
    probe = "#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(" \
            "const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n"
    result = subprocess.run([clang, "-x", "c", "-", "-o", os.devnull] + SANITIZE,
                            input=probe, capture_output=True, text=True, env=clean_env())
    if result.returncode != 0:
        return "clang cannot link with -fsanitize=fuzzer (libclang-rt-14-dev missing?): " + \
               (result.stderr.strip().splitlines() or ["?"])[-1]
    return None


def clean_env() -> Dict[str, str]:
    """The environment without another sanitizer runtime preloaded (as
    tools/sanitize_test.py does for the Python tests): the harnesses link
    clang's own, and two ASan runtimes in one process abort."""
    env = dict(os.environ)
    for name in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONMALLOC"):
        env.pop(name, None)
    return env


def build(clang: str, build_dir: str, names: List[str]) -> Dict[str, str]:
    """Compile the core once, link each harness; returns name -> binary."""
    objdir = os.path.join(build_dir, "obj")
    os.makedirs(objdir, exist_ok=True)
    define = '-DKSI_BUILD_VERSION="%s"' % package_version()
    objects = []
    for source in core_sources():
        obj = os.path.join(objdir, source[:-2] + ".o")
        # Instrument the core for coverage and sanitizers without libFuzzer's main.
        cmd = [clang, "-c", os.path.join(CSRC, source), "-o", obj, "-I", CSRC, define] + \
            CFLAGS + ["-fsanitize=fuzzer-no-link,address,undefined",
                      "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"]
        subprocess.run(cmd, check=True, env=clean_env())
        objects.append(obj)
    binaries = {}
    for name in names:
        out = os.path.join(build_dir, name)
        cmd = [clang, os.path.join(FUZZ_DIR, name + ".c"), "-o", out, "-I", CSRC, "-I", FUZZ_DIR,
               define] + CFLAGS + SANITIZE + objects
        subprocess.run(cmd, check=True, env=clean_env())
        binaries[name] = out
    return binaries


_STAT = re.compile(r"stat::(\w+):\s+(\d+)")
_PROBLEMS = (
    ("leak", "ERROR: LeakSanitizer"),
    ("timeout", "ERROR: libFuzzer: timeout"),
    ("out-of-memory", "ERROR: libFuzzer: out-of-memory"),
    ("undefined behaviour", "runtime error:"),
    ("invariant", "invariant failed:"),
    ("address", "ERROR: AddressSanitizer"),
    ("crash", "ERROR: libFuzzer: deadly signal"),
)


def run_one(binary: str, name: str, max_len: int, args, build_dir: str) -> dict:
    work = os.path.join(build_dir, "corpus", name)
    seeds = os.path.join(FUZZ_DIR, "corpus", name)
    artifacts = os.path.join(build_dir, "artifacts")
    os.makedirs(work, exist_ok=True)
    os.makedirs(artifacts, exist_ok=True)
    log_path = os.path.join(build_dir, name + ".log")
    cmd = [binary, "-max_len=%d" % max_len, "-timeout=%d" % args.timeout,
           "-rss_limit_mb=%d" % args.rss_limit_mb, "-detect_leaks=1", "-print_final_stats=1",
           "-artifact_prefix=%s/%s-" % (artifacts, name)]
    if args.replay:
        cmd += ["-runs=0", seeds]      # each committed input once, nothing new
    else:
        if args.runs is not None:
            cmd.append("-runs=%d" % args.runs)
        if args.seconds is not None:
            cmd.append("-max_total_time=%d" % args.seconds)
        cmd += [work] + ([seeds] if os.path.isdir(seeds) else [])
    env = clean_env()
    env["ASAN_OPTIONS"] = "detect_leaks=1"
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    started = time.monotonic()
    prefix = ["nice", "-n", str(args.nice)] if args.nice else []
    with open(log_path, "w") as log:
        result = subprocess.run(prefix + cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    elapsed = time.monotonic() - started
    with open(log_path, errors="replace") as fh:
        text = fh.read()
    stats = {k: int(v) for k, v in _STAT.findall(text)}
    problem = None
    if result.returncode != 0:
        problem = next((what for what, marker in _PROBLEMS if marker in text),
                       "exit status %d" % result.returncode)
    artifact = re.findall(r"Test unit written to (\S+)", text)
    return {"name": name, "executions": stats.get("number_of_executed_units", 0),
            "seconds": elapsed, "problem": problem, "artifact": artifact[-1] if artifact else None,
            "log": log_path, "peak_rss_mb": stats.get("peak_rss_mb", 0)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, help="run each harness this long (with --runs: "
                                              "at most this long)")
    p.add_argument("--runs", type=int, help="run each harness for this many inputs")
    p.add_argument("--only", help="comma-separated harness names")
    p.add_argument("--jobs", type=int, default=1, help="harnesses run at the same time")
    p.add_argument("--build-dir", default=os.path.join(ROOT, "build", "fuzz"))
    p.add_argument("--clang", help="the clang to use (default: clang on PATH)")
    p.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
    p.add_argument("--rss-limit-mb", type=int, default=2048)
    p.add_argument("--nice", type=int, default=0, help="run the fuzzers under nice -n N")
    p.add_argument("--build-only", action="store_true")
    p.add_argument("--replay", action="store_true",
                   help="run each harness once over its committed corpus (seeds and the "
                        "regress-* inputs that once found a bug), then stop")
    p.add_argument("--list", action="store_true", help="print the harness names")
    args = p.parse_args(argv)

    check_listed()
    selected = [h for h in HARNESSES
                if not args.only or h[0] in args.only.split(",")]
    if args.only and len(selected) != len(args.only.split(",")):
        known = ", ".join(h[0] for h in HARNESSES)
        print("fuzz: unknown harness in --only %s (known: %s)" % (args.only, known),
              file=sys.stderr)
        return 2
    if args.list:
        print("\n".join(h[0] for h in selected))
        return 0
    if args.seconds is None and args.runs is None and not (args.build_only or args.replay):
        args.seconds = 5
    clang = find_clang(args.clang)
    problem = toolchain_problem(clang)
    if problem:
        print("fuzz: cannot build: %s" % problem, file=sys.stderr)
        return 2
    build_dir = os.path.abspath(args.build_dir)
    started = time.monotonic()
    binaries = build(clang, build_dir, [h[0] for h in selected])
    print("fuzz: built %d harnesses in %s (%.1f s)" % (len(binaries), build_dir,
                                                      time.monotonic() - started), flush=True)
    if args.build_only:
        return 0

    def job(h):
        return run_one(binaries[h[0]], h[0], h[1], args, build_dir)

    results = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for r in pool.map(job, selected):
            results.append(r)
            rate = r["executions"] / r["seconds"] if r["seconds"] else 0
            print("%-18s %12d executions %8.1f s %9.0f/s  rss %4d MB  crashes %d  %s" % (
                r["name"], r["executions"], r["seconds"], rate, r["peak_rss_mb"],
                0 if r["problem"] is None else 1,
                "ok" if r["problem"] is None else "FAILED: %s (input %s, log %s)" % (
                    r["problem"], r["artifact"], r["log"])), flush=True)
    failed = [r for r in results if r["problem"]]
    total = sum(r["executions"] for r in results)
    print("fuzz: %d harnesses, %d executions in %.0f s, %d failed%s" % (
        len(results), total, time.monotonic() - started, len(failed),
        (": " + ", ".join(r["name"] for r in failed)) if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
