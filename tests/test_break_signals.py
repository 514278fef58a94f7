"""``ksinspect break`` ended by signals, live, against small C programs
(tests/programs/calls.c and churn.c): SIGTERM, SIGHUP, SIGQUIT, SIGINT, a
closed output (EPIPE), two SIGINTs 2-10 ms apart and a burst of them that
lands during the restore, for a process attached with --pid and for a
program ksinspect started. After each, the program must finish with the
same output as an untraced run (its checksums are only right if every
call ran with its real bytes), show ``TracerPid: 0``, and hold the byte of
its ELF file under the software breakpoint and its page's original rights.

Then the attach failures: a zombie, a process another tracer holds (strace),
a kernel thread, and a process whose threads come and go (six attaches in a
row must all work).
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

if os.environ.get("KSINSPECT_SANITIZED"):
    # tools/sanitize_test.py (CI's slowest step): the signal handling under test is Python's; the C core only decodes, which the other tests cover.
    pytest.skip("not run under the sanitizers: the signal handling under test is Python's; the C core only decodes, which the other tests cover", allow_module_level=True)

from ksinspect.live import ptrace
from ksinspect.live.elf_symbols import ElfSymbols, load_bias
from ksinspect.live.proc_memory import ProcessMemory, read_maps
from conftest import PROGRAMS, skip_if_ignored

REASON = ptrace.unavailable_reason()
pytestmark = [pytest.mark.live,
              pytest.mark.skipif(REASON is not None, reason=str(REASON)),
              pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")]
CALLS, PAUSE_MS = 150, 6          # about 1 s of work


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("signal-programs")
    exes = {}
    for name in ("calls", "churn"):
        exes[name] = str(out / name)
        subprocess.run(["gcc", "-O1", "-pthread", "-o", exes[name],
                        os.path.join(PROGRAMS, name + ".c")], check=True)
    exes["expected"] = _program_lines(subprocess.run(
        [exes["calls"], str(CALLS)], capture_output=True, text=True, check=True).stdout)
    return exes


def _program_lines(text):
    return [l for l in text.splitlines() if l.startswith(("calls", "counter", "checksum"))]


def _status(pid):
    with open("/proc/%d/status" % pid) as fh:
        return dict(l.split(":", 1) for l in fh if ":" in l)


def _check_target_is_whole(pid, exe):
    """TracerPid 0, bump's byte as in the ELF file, the page rw-p again."""
    assert _status(pid)["TracerPid"].strip() == "0"
    elf = ElfSymbols.from_file(exe)
    bias = load_bias(pid, elf, os.path.realpath(exe))
    bump, page = elf.lookup("bump").value, elf.lookup("page").value
    with open(exe, "rb") as fh:
        fh.seek(elf.file_offset(bump))
        file_byte = fh.read(1)
    with ProcessMemory(pid) as memory:
        assert memory.read(bump + bias, 1) == file_byte
    rights = [m.perms for m in read_maps(pid) if m.start <= page + bias < m.end]
    assert rights == ["rw-p"]


def _ksinspect(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "ksinspect", "break", "--sw", "bump",
                             "--hw", "counter:w:4", "--guard", "page"] + args,
                            stderr=subprocess.PIPE, text=True, **kw)


def _wait_for_hits(stream, hits=3, timeout=60, go=None):
    """Read ksinspect's lines until the software breakpoint's hit number
    `hits`; when the session starts ("run" line), let the program go (it
    waits for a line on stdin, so a loaded machine cannot make it finish
    before ksinspect attached)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("run ") and go is not None:
            go.write(b"go\n")
            go.flush()
        if line.startswith("sw ") and ("hit %d" % hits) in line:
            return seen
    raise AssertionError("no %d software hits in %r" % (hits, seen))


def _send(proc, signums, gap):
    for i, signum in enumerate(signums):
        if i:
            time.sleep(gap)
        proc.send_signal(signum)


def _stderr_lines(err):
    lines = err.splitlines()
    assert "Traceback" not in err
    return lines


SIGNALS = [("SIGTERM", [signal.SIGTERM], 0), ("SIGHUP", [signal.SIGHUP], 0),
           ("SIGQUIT", [signal.SIGQUIT], 0), ("SIGINT", [signal.SIGINT], 0),
           ("2 SIGINT 2 ms apart", [signal.SIGINT] * 2, 0.002),
           ("2 SIGINT 10 ms apart", [signal.SIGINT] * 2, 0.010),
           ("40 SIGINT, 0.2 ms apart (some during the restore)", [signal.SIGINT] * 40, 0.0002),
           ("SIGTERM then SIGINT during the restore", [signal.SIGTERM] + [signal.SIGINT] * 20,
            0.0002)]


@pytest.mark.parametrize("name, signums, gap", SIGNALS, ids=[s[0] for s in SIGNALS])
def test_attached_process_survives_the_signal(built, tmp_path, name, signums, gap):
    skip_if_ignored(*signums)
    out = tmp_path / "program.txt"
    with open(out, "w") as fh:
        target = subprocess.Popen([built["calls"], str(CALLS), str(PAUSE_MS), "wait"],
                                  stdout=fh, stdin=subprocess.PIPE)
    try:
        proc = _ksinspect(["--pid", str(target.pid)], stdout=subprocess.PIPE)
        _wait_for_hits(proc.stdout, go=target.stdin)
        _send(proc, signums, gap)
        rest, err = proc.communicate(timeout=30)
        assert proc.returncode == 128 + signums[0], err
        lines = _stderr_lines(err)
        assert lines[-1].startswith("ksinspect: interrupted") and len(lines) <= 2, lines
        assert "restored 1 byte(s), debug registers of 1 thread(s), 1 page protection(s)" in rest
        _check_target_is_whole(target.pid, built["calls"])
        # A fresh look at the debug registers: DR7 is 0 again.
        from ksinspect.live.debugger import Debugger
        with Debugger.attach(target.pid) as look:
            assert look.tracee.debugreg(7) == 0
        assert target.wait(timeout=30) == 0
    finally:
        if target.poll() is None:
            target.kill()
            target.wait()
    assert _program_lines(out.read_text()) == built["expected"]


@pytest.mark.parametrize("name, signums, gap", SIGNALS, ids=[s[0] for s in SIGNALS])
def test_started_program_survives_the_signal(built, tmp_path, name, signums, gap):
    skip_if_ignored(*signums)
    out = tmp_path / "all.txt"              # ksinspect's output and the program's, as a terminal
    errors = tmp_path / "stderr.txt"        # the program inherits both: no pipes to wait on
    with open(out, "w") as fh, open(errors, "w") as efh:
        proc = subprocess.Popen([sys.executable, "-m", "ksinspect", "break", "--sw", "bump",
                                 "--hw", "counter:w:4", "--guard", "page", "--", built["calls"],
                                 str(CALLS), str(PAUSE_MS), "wait"], stdout=fh, stderr=efh,
                                stdin=subprocess.PIPE)
    with open(out) as reader:
        seen = _wait_for_hits(_Follow(reader), go=proc.stdin)
    pid = int([l.split()[1] for l in seen if l.startswith("pid ")][0])
    _send(proc, signums, gap)
    status = proc.wait(timeout=30)
    err = errors.read_text()
    assert status == 128 + signums[0], err
    lines = _stderr_lines(err)
    assert lines[-1].startswith("ksinspect: interrupted") and len(lines) <= 2, lines
    if signums == [signal.SIGINT]:
        # ksinspect waits for the program it started, as after a normal end
        # (a second Ctrl-C stops that wait: the cases below).
        assert ("exit   pid %-7d exited with status 0 (after detach)" % pid) in out.read_text()
    else:
        # Asked to go away, ksinspect leaves at once; the program runs on
        # (it has most of its second of work left).
        _check_target_is_whole(pid, built["calls"])
        deadline = time.monotonic() + 30
        while os.path.exists("/proc/%d" % pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    assert _program_lines(out.read_text()) == built["expected"]


class _Follow:
    """readline() on a growing file (tail -f)."""

    def __init__(self, fh):
        self.fh, self.partial = fh, ""

    def readline(self):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.partial += self.fh.readline()
            if self.partial.endswith("\n"):
                line, self.partial = self.partial, ""
                return line
            time.sleep(0.005)
        return ""


def test_closed_output_restores_and_exits_quietly(built, tmp_path):
    out = tmp_path / "program.txt"
    with open(out, "w") as fh:
        target = subprocess.Popen([built["calls"], str(CALLS), str(PAUSE_MS), "wait"],
                                  stdout=fh, stdin=subprocess.PIPE)
    try:
        proc = _ksinspect(["--pid", str(target.pid)], stdout=subprocess.PIPE)
        _wait_for_hits(proc.stdout, hits=2, go=target.stdin)
        proc.stdout.close()                  # `ksinspect break ... | head -3`
        err = proc.stderr.read()
        assert proc.wait(timeout=30) == 0 and err == ""
        _check_target_is_whole(target.pid, built["calls"])
        assert target.wait(timeout=30) == 0
    finally:
        if target.poll() is None:
            target.kill()
            target.wait()
    assert _program_lines(out.read_text()) == built["expected"]


# ---------------------------------------------------------------- attach failures

def _break_pid(pid):
    return subprocess.run([sys.executable, "-m", "ksinspect", "break", "--pid", str(pid),
                           "--hw", "0x1000:w:8", "--timeout", "0.2"],
                          capture_output=True, text=True, timeout=60)


def test_a_zombie_is_named_as_such():
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while _status(child.pid)["State"].split()[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        run = _break_pid(child.pid)
        assert run.returncode == 1 and run.stderr.count("\n") == 1
        assert "process %d is a zombie" % child.pid in run.stderr
        assert "parent (PID %d)" % os.getpid() in run.stderr
    finally:
        child.wait()


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_a_process_traced_by_strace_names_its_tracer():
    target = subprocess.Popen(["sleep", "30"])
    tracer = subprocess.Popen(["strace", "-p", str(target.pid), "-o", os.devnull],
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while _status(target.pid)["TracerPid"].strip() == "0" and time.monotonic() < deadline:
            time.sleep(0.01)
        run = _break_pid(target.pid)
        assert run.returncode == 1 and run.stderr.count("\n") == 1, run.stderr
        assert ("process %d is already traced by PID %d (strace)" % (target.pid, tracer.pid)
                in run.stderr)
        assert "uid" not in run.stderr and "Yama" not in run.stderr
    finally:
        tracer.terminate()
        tracer.wait()
        target.kill()
        target.wait()


@pytest.mark.skipif(not os.path.exists("/proc/2/stat"), reason="no kthreadd in this PID space")
def test_a_kernel_thread_is_named_as_such():
    with open("/proc/2/stat") as fh:
        if not int(fh.read().rsplit(")", 1)[1].split()[6]) & 0x00200000:
            pytest.skip("PID 2 is not a kernel thread here")
    run = _break_pid(2)
    assert run.returncode == 1 and "process 2 (kthreadd) is a kernel thread" in run.stderr


def test_attach_to_threads_that_come_and_go(built, tmp_path):
    out = tmp_path / "churn.txt"
    with open(out, "w") as fh:
        target = subprocess.Popen([built["churn"], "0", "50"], stdout=fh, stdin=subprocess.PIPE)
    try:
        time.sleep(0.1)
        results = [_break_pid(target.pid) for _ in range(6)]
        assert [r.returncode for r in results] == [0] * 6, [r.stderr for r in results]
        target.stdin.close()                 # now finish
        assert target.wait(timeout=60) == 0
    finally:
        if target.poll() is None:
            target.kill()
            target.wait()
    lines = out.read_text().splitlines()
    n = int(lines[1].split()[1])
    assert n > 100 and lines[2] == "total %d" % (n * (n + 1) // 2)
