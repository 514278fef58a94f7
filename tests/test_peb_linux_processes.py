"""``ksinspect peb --pid`` of ordinary Linux processes must never find a PEB.

Python's heap holds pages whose word at +0x30 points back at the page (the
test a TEB's NtTib.Self passes), which once made ``peb --pid`` of a Python
process report a Windows _PEB at a glibc address. Every process here is a
plain Linux program (python with a busy heap, sleep, a static binary), read
both ways: through ptrace (each thread's GS base) and, with strace holding
the threads so ptrace is refused, by the fallback scan of writable memory.
Also: this process itself, and a kernel thread.
"""
import os
import shutil
import subprocess
import sys
import time

import pytest

from ksinspect.live import ptrace

from conftest import PROGRAMS

pytestmark = [pytest.mark.live,
              pytest.mark.skipif(ptrace.unavailable_reason() is not None,
                                 reason=str(ptrace.unavailable_reason()))]
BUSY_PYTHON = ("import sys, time; heap = [bytearray(i % 700) for i in range(200000)]; "
               "d = {i: str(i) for i in range(100000)}; print('ready', flush=True); "
               "sys.stdin.read()")


@pytest.fixture(scope="module")
def static_exe(tmp_path_factory):
    exe = str(tmp_path_factory.mktemp("static") / "calls-static")
    run = subprocess.run(["gcc", "-static", "-O1", "-o", exe,
                          os.path.join(PROGRAMS, "calls.c")], capture_output=True)
    if run.returncode:
        pytest.skip("no static libc to link with: %s" % run.stderr.decode()[-200:])
    return exe


def _start(kind, static_exe):
    if kind == "python":
        proc = subprocess.Popen([sys.executable, "-c", BUSY_PYTHON], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        return proc
    argv = ["sleep", "60"] if kind == "sleep" else [static_exe, "100000", "1"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    time.sleep(0.2)
    return proc


def _peb(pid):
    return subprocess.run([sys.executable, "-m", "ksinspect", "peb", "--pid", str(pid)],
                          capture_output=True, text=True, timeout=120)


def _tracer(pid):
    with open("/proc/%d/status" % pid) as fh:
        return int([l.split()[1] for l in fh if l.startswith("TracerPid:")][0])


@pytest.mark.parametrize("held", [False, True], ids=["ptrace", "scan (ptrace refused)"])
@pytest.mark.parametrize("kind", ["python", "sleep", "static"])
def test_a_linux_process_has_no_peb(kind, held, static_exe):
    if held and shutil.which("strace") is None:
        pytest.skip("needs strace to hold the threads")
    target = _start(kind, static_exe)
    holder = None
    try:
        if held:
            holder = subprocess.Popen(["strace", "-f", "-p", str(target.pid), "-o", os.devnull],
                                      stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while _tracer(target.pid) == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
        run = _peb(target.pid)
        assert run.returncode == 1, run.stdout[:500]
        assert run.stdout == "" and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
        assert "not a Windows program running under Wine" in run.stderr
        if held:
            assert "already traced by PID %d (strace)" % holder.pid in run.stderr
            assert "writable anonymous memory" in run.stderr
    finally:
        if holder is not None:
            holder.terminate()
            holder.wait()
        target.kill()
        target.wait()


def test_this_process_has_no_peb(capsys):
    from ksinspect.cli import main
    assert main(["peb", "--pid", str(os.getpid())]) == 1
    err = capsys.readouterr().err
    assert "is ksinspect itself" in err and "not a Windows program" in err


@pytest.mark.skipif(not os.path.exists("/proc/2/stat"), reason="no PID 2 in this PID space")
def test_a_kernel_thread_is_named():
    with open("/proc/2/stat") as fh:
        if not int(fh.read().rsplit(")", 1)[1].split()[6]) & 0x00200000:
            pytest.skip("PID 2 is not a kernel thread here")
    run = _peb(2)
    assert run.returncode == 1
    assert run.stderr == "ksinspect: error: process 2 (kthreadd) is a kernel thread: it has no " \
                         "user memory to read\n"
