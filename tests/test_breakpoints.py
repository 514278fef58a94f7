"""The breakpoint lab, live: hardware, software and memory breakpoints on
small C programs compiled for the test session (tests/programs/*.c).

Expected values come from the programs themselves (they print the
addresses they use, the values they write and checksums of their work),
from an untraced run of the same program, from the file on disk (the
original byte under a software breakpoint), from binutils ``nm`` (symbol
values), from a C compiler's ``offsetof`` (the u_debugreg offset) and from
the Intel SDM (DR6 reads 0xFFFF0FF0 with nothing recorded and Bn is bit n,
vol. 3B §17.2.3).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from ksinspect.errors import EncodeError, NoSuchProcessError
from ksinspect.live import ptrace
from ksinspect.live.debugger import Debugger, GuardHit, HardwareHit, SoftwareHit
from ksinspect.live.elf_symbols import ElfSymbols
from conftest import PROGRAMS, run_cli, skip_if_ignored

REASON = ptrace.unavailable_reason()
pytestmark = [pytest.mark.live,
              pytest.mark.skipif(REASON is not None, reason=str(REASON)),
              pytest.mark.skipif(shutil.which("gcc") is None,
                                 reason="the test programs need gcc to be compiled")]
DR6_NOTHING = 0xFFFF0FF0          # SDM vol. 3B §17.2.3: reserved bits read as 1


@pytest.fixture(scope="session")
def progs(tmp_path_factory):
    out = tmp_path_factory.mktemp("bp-programs")
    built = {}
    for name in ("watch", "calls", "guard", "threads", "offsets"):
        exe = str(out / name)
        subprocess.run(["gcc", "-O1", "-pthread", "-o", exe,
                        os.path.join(PROGRAMS, name + ".c")], check=True)
        built[name] = exe
    # One probe: can this machine trace at all (containers may forbid ptrace)?
    try:
        with open(os.devnull, "w") as devnull:
            Debugger.start([built["watch"], "0"], stdout=devnull, kill_on_close=True).close()
    except PermissionError as exc:
        pytest.skip("ptrace is not allowed here: %s" % exc)
    return built


def run_traced(argv, setup, count=None, timeout=10.0, tmp_path=None):
    """Start argv under the debugger, call setup(dbg), collect the events;
    returns (events, the program's stdout lines, its wait status)."""
    outfile = tmp_path / ("out-%d.txt" % time.monotonic_ns())
    with open(outfile, "w") as out:
        with Debugger.start(argv, stdout=out) as dbg:
            setup(dbg)
            events = list(dbg.events(count=count, timeout=timeout))
        status = dbg.wait()
    lines = outfile.read_text().splitlines()
    return events, lines, status, dbg


def untraced(argv):
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()


def field(lines, key):
    return [line.split()[1:] for line in lines if line.split()[:1] == [key]]


cli = run_cli


# ------------------------------------------------------------- the layer below

def test_u_debugreg_offset_matches_the_c_compiler(progs):
    # offsetof(struct user, u_debugreg[n]) as <sys/user.h> lays it out.
    printed = subprocess.run([progs["offsets"]], capture_output=True, text=True,
                             check=True).stdout.split()
    assert [int(x) for x in printed] == [ptrace.debugreg_offset(n) for n in (0, 1, 2, 3, 6, 7)]


def test_elf_symbols_match_nm(progs):
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("binutils nm is not installed")
    elf = ElfSymbols.from_file(progs["calls"])
    listed = subprocess.run([nm, progs["calls"]], capture_output=True, text=True,
                            check=True).stdout.splitlines()
    values = {parts[2]: int(parts[0], 16) for parts in (l.split() for l in listed)
              if len(parts) == 3}
    for name in ("bump", "main", "counter", "page"):
        assert elf.lookup(name).value == values[name], name
    if shutil.which("readelf"):
        header = subprocess.run(["readelf", "-h", progs["calls"]], capture_output=True,
                                text=True, check=True).stdout
        assert elf.pie == ("DYN" in header.split("Type:")[1].split("\n")[0])


# --------------------------------------------------------- (a) hardware watch

@pytest.mark.parametrize("slot", [0, 2])
def test_hardware_write_watchpoint_matches_the_program(progs, tmp_path, slot):
    n = 5
    events, lines, status, _ = run_traced(
        [progs["watch"], str(n)], lambda d: d.add_hardware("counter", "write", 4, slot=slot),
        tmp_path=tmp_path)
    assert status is None          # it exited while traced: the exit event has it
    address = int(field(lines, "counter-address")[0][0], 16)
    value = int(field(lines, "counter-initial")[0][0])
    written = [int(v) for _, v in field(lines, "write")]
    hits = [e for e in events if isinstance(e, HardwareHit)]
    assert len(hits) == n == len(written)
    for hit, new in zip(hits, written):
        assert hit.address == address and hit.slot == slot
        assert (hit.old, hit.new) == (value, new)        # trap after the write
        assert hit.dr6.hits == [slot]
        assert hit.dr6.raw == DR6_NOTHING | 1 << slot    # Bk only (SDM §17.2.3)
        assert not (hit.dr6.bs or hit.dr6.bd or hit.dr6.bt)
        assert "DR6 %#x: B%d" % (hit.dr6.raw, slot) in hit.explain()
        assert "&lt;counter&gt;" in hit._repr_html_()           # escaped for notebooks
        value = new
    assert events[-1].kind == "exit" and events[-1].status == 0


def test_hardware_watchpoint_follows_new_threads(progs, tmp_path):
    events, lines, status, _ = run_traced(
        [progs["threads"]], lambda d: d.add_hardware("shared", "w", 8), tmp_path=tmp_path)
    wrote = [(int(tid), int(v)) for tid, _, v in field(lines, "thread")]
    hits = [e for e in events if isinstance(e, HardwareHit)]
    assert [(h.tid, h.new) for h in hits] == wrote
    assert len({tid for tid, _ in wrote} | {events[-1].pid}) == 3   # two new threads
    assert all(h.address == int(field(lines, "shared-address")[0][0], 16) for h in hits)


# ------------------------------------------------------- (b) software breakpoint

def test_software_breakpoint_by_symbol_and_function_still_works(progs, tmp_path):
    n = 6
    argv = [progs["calls"], str(n)]
    events, lines, status, _ = run_traced(argv, lambda d: d.add_software("bump"),
                                          tmp_path=tmp_path)
    bump = int(field(lines, "bump-address")[0][0], 16)
    hits = [e for e in events if isinstance(e, SoftwareHit)]
    assert [h.hits for h in hits] == list(range(1, n + 1))
    assert all(h.rip == bump and h.rip_symbol == "bump" for h in hits)
    # The same results as a run without any debugger: the byte was put back
    # and the instruction executed every time.
    expected = [l for l in untraced(argv) if not l.startswith(("bump-address", "pid"))]
    assert [l for l in lines if not l.startswith(("bump-address", "pid"))] == expected
    assert field(lines, "calls") == [[str(n)]]


def test_cli_software_breakpoint_jsonl(progs):
    proc = subprocess.run([sys.executable, "-m", "ksinspect", "break", "--sw", "bump",
                           "--format", "jsonl", "--", progs["calls"], "4"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    program = [l for l in proc.stdout.splitlines() if not l.startswith("{")]
    bump = int(field(program, "bump-address")[0][0], 16)
    sw = [r for r in records if r["event"] == "sw"]
    assert [r["rip"] for r in sw] == [bump] * 4
    assert records[0]["event"] == "armed" and records[0]["original_byte"] == _file_byte(
        progs["calls"], "bump")
    assert field(program, "checksum") == field(untraced([progs["calls"], "4"]), "checksum")


def _file_byte(path, symbol):
    """The byte at a symbol in the file on disk (through its PT_LOAD)."""
    elf = ElfSymbols.from_file(path)
    with open(path, "rb") as f:
        f.seek(elf.file_offset(elf.lookup(symbol).value))
        return f.read(1)[0]


# ------------------------------------------------------------ (c) guard pages

def test_guard_page_reports_the_touched_addresses(progs, tmp_path):
    events, lines, status, _ = run_traced([progs["guard"], "100"],
                                          lambda d: d.add_guard("page"), tmp_path=tmp_path)
    page = int(field(lines, "page-address")[0][0], 16)
    read_at = int(field(lines, "read-address")[0][0], 16)
    write_at = int(field(lines, "write-address")[0][0], 16)
    hits = [e for e in events if isinstance(e, GuardHit)]
    assert [h.address for h in hits[:2]] == [read_at, write_at]
    assert all(h.page == page and h.si_code == "SEGV_ACCERR" and h.rearmed for h in hits)
    assert field(lines, "value") == [["42"]]           # the access ran after the step


def test_guard_page_once_and_write_only(progs, tmp_path):
    events, lines, _, _ = run_traced([progs["guard"], "200"],
                                     lambda d: d.add_guard("page", access="write", once=True),
                                     tmp_path=tmp_path)
    hits = [e for e in events if isinstance(e, GuardHit)]
    # Read-only page: the read does not fault, the write does, once.
    assert [h.address for h in hits] == [int(field(lines, "write-address")[0][0], 16)]
    assert not hits[0].rearmed


# --------------------------------------------------- (d) interrupted sessions

def _expected_output(progs, n):
    return [l for l in untraced([progs["calls"], str(n)])
            if l.startswith(("calls", "counter", "checksum"))]


def test_exception_midway_restores_everything_and_program_runs_on(progs, tmp_path):
    n = 120
    outfile = tmp_path / "out.txt"
    with open(outfile, "w") as out:
        dbg = Debugger.start([progs["calls"], str(n), "3"], stdout=out)
        with pytest.raises(RuntimeError):
            with dbg:
                dbg.add_software("bump")
                dbg.add_hardware("counter", "w", 4)
                dbg.add_guard("page")
                for i, _ in enumerate(dbg.events(timeout=10)):
                    if i == 4:
                        raise RuntimeError("the notebook cell fails")
        pid = dbg.tracee.pid
        report = dbg.report
        assert (report.bytes_restored, report.threads_debugregs_restored,
                report.pages_restored) == (1, 1, 1)
        # Look again from outside with a fresh session: DR7 is 0, the byte is
        # the one in the file, the page is rw-p again.
        with Debugger.attach(pid) as look:
            assert look.tracee.debugreg(7) == 0
            bump = look.tracee.symbols.address("bump")
            assert look.tracee.read(bump, 1)[0] == _file_byte(progs["calls"], "bump")
            page = look.tracee.symbols.address("page")
            assert look.tracee.mapping(page)[2] == "rw-p"
        status = dbg.wait()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    lines = outfile.read_text().splitlines()
    assert [l for l in lines if l.startswith(("calls", "counter", "checksum"))] == \
        _expected_output(progs, n)


@pytest.mark.parametrize("whom", ["ksinspect", "process-group"])
def test_sigint_to_the_cli_midway(progs, whom):
    skip_if_ignored(signal.SIGINT)
    # "process-group" is Ctrl-C in a terminal: ksinspect and the program both
    # get SIGINT; the program's copy is the session's, so it is not delivered.
    n = 80
    proc = subprocess.Popen([sys.executable, "-m", "ksinspect", "break", "--sw", "bump",
                             "--hw", "counter:w:4", "--guard", "page", "--format", "jsonl",
                             "--", progs["calls"], str(n), "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if '"event": "sw"' in line and '"hits": 3' in line:
            break
    if whom == "ksinspect":
        proc.send_signal(signal.SIGINT)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.strip() == "ksinspect: interrupted: breakpoints removed, process detached"
    lines = "".join(seen).splitlines() + out.splitlines()
    end = [json.loads(l) for l in lines if l.startswith('{"event": "end"')][0]
    assert (end["bytes_restored"], end["threads_debugregs_restored"],
            end["pages_restored"], end["errors"]) == (1, 1, 1, [])
    exit_ = [json.loads(l) for l in lines if l.startswith('{"event": "exit"')][0]
    assert exit_["after_detach"] and exit_["status"] == 0
    program = [l for l in lines if l.startswith(("calls", "counter", "checksum"))]
    assert program == _expected_output(progs, n)


def test_tracee_killed_midway_ends_the_session_cleanly(progs):
    with open(os.devnull, "w") as devnull:
        with Debugger.start([progs["calls"], "100", "5"], stdout=devnull) as dbg:
            dbg.add_software("bump")
            dbg.add_guard("page")
            dbg.add_hardware("counter", "w", 4)
            events = []
            for event in dbg.events(timeout=10):
                events.append(event)
                if len(events) == 3:
                    os.kill(dbg.tracee.pid, signal.SIGKILL)
    assert events[-1].kind == "exit" and events[-1].signal == "SIGKILL"
    assert dbg.report.outcome == "the process has exited" and dbg.report.errors == ()


def test_exec_ends_the_session_and_the_new_program_runs_on(progs, tmp_path):
    shell = shutil.which("sh")
    outfile = tmp_path / "out.txt"
    with open(outfile, "w") as out:
        with Debugger.start([shell, "-c", "exec %s 3" % progs["calls"]], stdout=out) as dbg:
            events = dbg.run(timeout=10)
        status = dbg.wait()
    assert [e.kind for e in events] == ["exec"]
    assert events[0].path == os.path.realpath(progs["calls"])
    if status is None:      # it ended while the session was closing: the exit event has it
        assert (dbg.tracee.exit.status, dbg.tracee.exit.signal) == (0, None)
    else:
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert [l for l in outfile.read_text().splitlines() if l.startswith("checksum")] == \
        [l for l in untraced([progs["calls"], "3"]) if l.startswith("checksum")]


def _state(pid):
    with open("/proc/%d/status" % pid) as f:
        return [l.split()[1] for l in f if l.startswith("State:")][0]


def test_attach_leaves_a_stopped_process_stopped(progs):
    # A process stopped by SIGSTOP (job control) is resumed with PTRACE_LISTEN,
    # not PTRACE_CONT: attaching must not wake it (ptrace(2), "group-stop").
    target = subprocess.Popen(["sleep", "20"])
    try:
        os.kill(target.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while _state(target.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        status, out, err = cli("break", "--pid", str(target.pid), "--hw", "0x1000:w:8",
                               "--timeout", "0.3")
        assert status == 0, err
        assert "detached" in out.splitlines()[-1]
        # PTRACE_DETACH kicks a group-stopped thread, which re-enters the stop
        # at once (kernel/ptrace.c __ptrace_unlink): it may be seen running
        # for an instant, but it must settle in T and stay there.
        deadline = time.monotonic() + 5
        while _state(target.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        assert _state(target.pid) == "T"
        os.kill(target.pid, signal.SIGCONT)
        deadline = time.monotonic() + 5
        while _state(target.pid) == "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _state(target.pid) in ("S", "R", "D")     # woken by SIGCONT (D: a page-in under load)
    finally:
        target.kill()
        target.wait()


# --------------------------------------------------------- (e) and (f) errors

def test_attach_to_a_process_that_does_not_exist():
    pid = 4_000_000        # above pid_max's ceiling (2^22)
    status, out, err = cli("break", "--pid", str(pid), "--sw", "main")
    assert status == 1 and err == "ksinspect: error: process %d does not exist\n" % pid
    with pytest.raises(NoSuchProcessError):
        Debugger.attach(pid)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the attacher as another user")
def test_refused_attach_says_what_is_needed():
    target = subprocess.Popen(["sleep", "20"])        # owned by root
    r, w = os.pipe()
    child = os.fork()
    if child == 0:                                    # the attacher, as nobody
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)                          # no CAP_SYS_PTRACE any more
            status, _, err = cli("break", "--pid", str(target.pid), "--sw", "main")
            os.write(w, json.dumps([status, err]).encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r) as f:
            status, err = json.loads(f.read())
        os.waitpid(child, 0)
    finally:
        target.kill()
        target.wait()
    assert status == 1 and err.count("\n") == 1
    assert err.startswith("ksinspect: error: not allowed to trace process %d: " % target.pid)
    assert "it belongs to uid 0 and this is uid 65534" in err and "CAP_SYS_PTRACE" in err


@pytest.mark.parametrize("argv, message", [
    (["--pid", "12x", "--sw", "main"], "not a decimal process id"),
    (["--sw", "main"], "give a program to run"),
    (["--pid", "1", "--", "/bin/true"], "not both"),
    (["--", "/bin/true"], "at least one breakpoint"),
    (["--hw", "main:x", "--", "/bin/true"], "is not ADDR:CONDITION:LENGTH"),
    (["--hw", "main:x:one", "--", "/bin/true"], "LENGTH is a decimal"),
    (["--guard", "main:exec", "--", "/bin/true"], "is not ADDR[:any|write]"),
    (["--count", "0", "--sw", "1", "--", "/bin/true"], "--count"),
])
def test_bad_usage_is_one_line_exit_2(argv, message):
    status, out, err = cli("break", *argv)
    assert status == 2 and message in err and err.count("\n") == 1


def test_unknown_symbol_and_missing_program(progs):
    status, _, err = cli("break", "--sw", "no_such_function", "--", progs["calls"], "1")
    assert status == 2 and "neither a symbol" in err and err.count("\n") == 1
    status, _, err = cli("break", "--sw", "main", "--", "/nonexistent/program")
    assert status == 1 and err == ("ksinspect: error: cannot run /nonexistent/program: "
                                   "No such file or directory\n")


@pytest.mark.parametrize("option", ["--sw", "--guard"])
def test_an_unmapped_address_is_a_usage_error_as_on_windows(progs, option):
    # Page 0 is never mapped in a Linux process (vm.mmap_min_addr); the Win32
    # backend says the same line for the same mistake (test_win32_debugger.py).
    status, _, err = cli("break", option, "0x10", "--", progs["calls"], "1")
    assert status == 2 and err.count("\n") == 1, err
    assert re.fullmatch(r"ksinspect: error: argument %s 0x10: address 0x10 is not mapped in "
                        r"process \d+\n" % option, err), err


@pytest.mark.parametrize("spec, message", [
    ("counter+2:write:4", "aligned"),                  # SDM §17.2.5
    ("bump:execute:4", "execute breakpoint must have length 1"),   # SDM §17.2.4
    ("counter:write:3", "length must be 1, 2, 4 or 8"),
    ("counter:io:1", "CR4.DE"),
])
def test_dr7_encoder_refusals_are_usage_errors(progs, spec, message):
    status, out, err = cli("break", "--hw", spec, "--", progs["calls"], "1")
    assert status == 2 and message in err and err.count("\n") == 1
    assert "Traceback" not in err
    with open(os.devnull, "w") as devnull, Debugger.start(
            [progs["calls"], "1"], stdout=devnull, kill_on_close=True) as dbg:
        first, cond, length = spec.split(":")
        with pytest.raises(EncodeError, match=message.split()[0]):
            dbg.add_hardware(first, cond, int(length))
        assert dbg.hardware == {}


def test_cli_break_takes_json_like_every_command(progs):
    """`--json` (README: every command takes it) is break's JSON lines, one
    object per event as it happens; every line parses and the four hits are there."""
    proc = subprocess.run([sys.executable, "-m", "ksinspect", "break", "--sw", "bump", "--json",
                           "--", progs["calls"], "4"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    program = [l for l in proc.stdout.splitlines() if not l.startswith("{")]
    bump = int(field(program, "bump-address")[0][0], 16)
    assert [r["rip"] for r in records if r["event"] == "sw"] == [bump] * 4
