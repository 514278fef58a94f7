#!/usr/bin/env python3
"""Run the whole test suite against a C core built with ASan and UBSan.

    python tools/sanitize_test.py            # the whole suite
    python tools/sanitize_test.py -- -k paging -x   # arguments after -- go to pytest

Run it with the Python of a development install (``pip install -e ".[test]"``:
it needs cffi, setuptools, pytest and hypothesis). The steps:

1. copy the source tree (tracked and untracked, not ignored files) to a
   temporary directory, so the normal in-tree build is never touched;
2. build the core there with ``KSINSPECT_SANITIZE=1 KSINSPECT_WERROR=1``
   (csrc/build_core.py adds ``-fsanitize=address,undefined
   -fno-sanitize-recover=undefined``) and check that the module calls the
   ASan and UBSan runtimes (``nm -D``);
3. run pytest from the copy with the sanitizer runtimes preloaded (the
   Python interpreter is not instrumented, so ASan must be loaded first:
   ``LD_PRELOAD`` of the libasan and libubsan of the compiler that built the
   core), ``PYTHONMALLOC=malloc`` (so ASan sees the buffers Python hands to
   C), ``PYTHONPATH`` pointing at the copy (subprocesses and the
   ``ksinspect`` script import the sanitized build too);
4. check the set-up first: a deliberate out-of-bounds read in C (a run
   table that lies about the buffer's length) must produce a report;
5. fail when pytest fails or when any sanitizer wrote a report: reports go
   to files (``log_path``), so one raised in a subprocess whose exit status
   a test expected to be non-zero (a CLI error test) is not missed.

Leak detection is off (``detect_leaks=0``): CPython does not free its
interned strings, type objects and module state at exit, and cffi keeps its
type cache for the life of the process, so LeakSanitizer would report those
on every run. The C core cannot leak anyway: it never allocates.

Exit status: pytest's when it failed, 1 when a sanitizer report was
written, 2 when the sanitized core cannot be built, else 0.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lies to the C core about a buffer's length: ksi_phys_read then copies
# past the end of a 16-byte allocation, which ASan must report.
_PROBE = """
from ksinspect._native import ffi, lib
buf = ffi.new("uint8_t[]", 16)
run = ffi.new("ksi_run *", (0, 64, 0))
phys = ffi.new("ksi_phys *")
phys.base, phys.base_length, phys.runs, phys.run_count = buf, 64, run, 1
out = ffi.new("uint8_t[]", 64)
lib.ksi_phys_read(phys, 0, out, 64, ffi.new("size_t *"))
"""


def runtime(compiler: str, name: str) -> str:
    """The shared sanitizer runtime the compiler links against (e.g. libasan.so)."""
    path = subprocess.run([compiler, "-print-file-name=%s" % name], capture_output=True,
                          text=True, check=True).stdout.strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        raise SystemExit("sanitize: %s has no %s (install libasan / libubsan for it)"
                         % (compiler, name))
    return os.path.realpath(path)


def copy_tree(dest: str) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        source = os.path.join(ROOT, name)
        if not os.path.isfile(source):
            continue            # deleted but still in the index
        target = os.path.join(dest, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    keep = "--keep" in argv
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else []
    compiler = os.environ.get("CC", "gcc")
    preload = [runtime(compiler, "libasan.so"), runtime(compiler, "libubsan.so")]
    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="ksinspect-sanitize-")
    reports = os.path.join(work, "reports")
    os.makedirs(reports)
    tree = os.path.join(work, "tree")
    try:
        copy_tree(tree)
        env = dict(os.environ, KSINSPECT_SANITIZE="1", KSINSPECT_WERROR="1", CC=compiler)
        build = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                               cwd=tree, env=env, capture_output=True, text=True)
        if build.returncode != 0:
            sys.stderr.write(build.stdout + build.stderr)
            print("sanitize: the sanitized core did not build", file=sys.stderr)
            return 2
        core = [f for f in os.listdir(os.path.join(tree, "ksinspect"))
                if f.startswith("_core") and f.endswith(".so")]
        symbols = subprocess.run(["nm", "-D", "--undefined-only",
                                  os.path.join(tree, "ksinspect", core[0])],
                                 capture_output=True, text=True).stdout if core else ""
        if "__asan_report" not in symbols or "__ubsan_handle" not in symbols:
            print("sanitize: the core in %s is not instrumented (no __asan_report / "
                  "__ubsan_handle references)" % tree, file=sys.stderr)
            return 2
        built = time.monotonic()
        print("sanitize: built the ASan+UBSan core in %s (%.0f s)" % (tree, built - started),
              flush=True)
        env = dict(os.environ)
        env.pop("KSINSPECT_SANITIZE", None)
        env.update({
            "LD_PRELOAD": " ".join(preload),
            # handle_segv=0: notebook 04 kills a child with SIGSEGV on purpose (a
            # guard page); bugs in the C core are caught by instrumentation.
            "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1:strict_string_checks=1:"
                            "detect_stack_use_after_return=1:handle_segv=0:"
                            "log_path=%s/asan" % reports,
            "KSINSPECT_SANITIZED": "1",
            "UBSAN_OPTIONS": "halt_on_error=1:abort_on_error=1:print_stacktrace=1:"
                             "log_path=%s/ubsan" % reports,
            "PYTHONMALLOC": "malloc",
            "PYTHONPATH": tree + os.pathsep + env.get("PYTHONPATH", ""),
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        check = subprocess.run([sys.executable, "-c", "import ksinspect._core as c; "
                                "print(c.__file__)"], cwd=tree, env=env, capture_output=True,
                               text=True)
        if check.returncode != 0 or not check.stdout.startswith(tree):
            sys.stderr.write(check.stdout + check.stderr)
            print("sanitize: the tests would not import the sanitized core", file=sys.stderr)
            return 2
        # Self-check: a C read past a 16-byte buffer must produce a report,
        # or the set-up is not catching anything.
        probe = subprocess.run([sys.executable, "-c", _PROBE], cwd=tree, env=env,
                               capture_output=True, text=True)
        caught = [n for n in os.listdir(reports) if n.startswith("asan")]
        if probe.returncode == 0 or not caught:
            sys.stderr.write(probe.stdout + probe.stderr)
            print("sanitize: the self-check overflow was not reported; the sanitizers are not "
                  "active", file=sys.stderr)
            return 2
        for name in caught:
            os.remove(os.path.join(reports, name))
        print("sanitize: self-check ok (an out-of-bounds read in C was reported)", flush=True)
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
                                + pytest_args, cwd=tree, env=env)
        found = sorted(os.listdir(reports))
        for name in found:
            with open(os.path.join(reports, name), errors="replace") as fh:
                sys.stderr.write("---- %s ----\n%s\n" % (name, fh.read()))
        elapsed = time.monotonic() - started
        if found:
            print("sanitize: %d sanitizer report(s) (above); tests %s; %.0f s" % (
                len(found), "passed" if result.returncode == 0 else "failed", elapsed))
            return 1
        print("sanitize: no sanitizer report; pytest exit status %d; %.0f s (build %.0f s)" % (
            result.returncode, elapsed, built - started))
        return result.returncode
    finally:
        if keep:
            print("sanitize: kept %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
