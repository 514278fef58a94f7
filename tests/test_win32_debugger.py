"""The Win32 debugger (ksinspect.live.win32_debugger) for real: run under the
Windows CPython of tools/winpython.py, under Wine, against
tests/programs/win_calls.c built with mingw-w64 in the same prefix.

The Windows side (tests/win32_session.py) runs every scenario in one
interpreter and reports the events; every assertion is made here, against
what the program printed about itself (GetCurrentProcessId/ThreadId, the
addresses of its own function and variables, the values it wrote, the base
LoadLibrary returned, GetProcAddress(kernel32, "Sleep")), its source (the
OutputDebugString texts, its exit code), the executable file on disk (the
byte under the INT3, through pefile), an untraced run of the same program,
the Intel SDM (DR6 reads 0xFFFF0FF0 with nothing recorded, Bn is bit n,
§17.2.3; DR7's Ln/R/Wn/LENn positions, §17.2.4) and Microsoft's headers (the
exception codes, PAGE_GUARD = 0x100).

Skipped, with the reason, without Wine, mingw-w64 or the Windows CPython.
Set KSINSPECT_TEST_WINEPREFIX to run in a prefix of your own.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import wine_programs

pytestmark = pytest.mark.live

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "programs", "win_calls.c")
DRIVER = os.path.join(HERE, "win32_session.py")
DR6_NOTHING = 0xFFFF0FF0
PAGE_GUARD = 0x100
EXCEPTION_BREAKPOINT = 0x80000003


def _windows_path(path):
    return "Z:" + str(path)


@pytest.fixture(scope="module")
def win(tmp_path_factory):
    reason = wine_programs.missing()
    if reason:
        pytest.skip(reason)
    if os.environ.get("KSINSPECT_SANITIZED"):
        # tools/sanitize_test.py: this code runs in the Windows CPython under Wine,
        # which never loads the sanitized Linux core; the normal run covers it.
        pytest.skip("the Win32 debugger runs under Wine, not on the sanitized core")
    info, reason = wine_programs.prepare_winpython()
    if info is None:
        pytest.skip(reason)
    if os.environ.get("KSINSPECT_TEST_WINEPREFIX"):
        info = dict(info, wine_prefix=os.environ["KSINSPECT_TEST_WINEPREFIX"])
    root = tmp_path_factory.mktemp("win32dbg")
    exes = {64: root / "win_calls.exe", 32: root / "win_calls32.exe"}
    for bits in (64, 32) if not wine_programs.missing32() else (64,):
        built = subprocess.run([wine_programs.MINGW[bits], "-O1", "-Wall", "-Wextra", "-o",
                                str(exes[bits]), SOURCE], capture_output=True, text=True)
        assert built.returncode == 0, built.stderr
    # win32_session.py runs its wow64_* scenarios on win_calls32.exe when it is there.
    return {"info": info, "root": root, "exe": str(exes[64]), "exe32": str(exes[32])}


@pytest.fixture(scope="module")
def results(win):
    run = wine_programs.run_winpython(win["info"], DRIVER, _windows_path(win["exe"]),
                                      _windows_path(win["root"]), timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads(run.stdout)
    for name, result in data.items():
        assert "crashed" not in result, "%s:\n%s" % (name, result["crashed"])
    return data


def printed(lines, key):
    return [line.split()[1:] for line in lines if line.split()[:1] == [key]]


def number(lines, key, base=16):
    return int(printed(lines, key)[0][0], base)


def program_results(lines):
    """What an untraced run must also print: everything but the ids."""
    return [l for l in lines if l.split()[:1] not in (["pid"], ["tid"], ["ready"])]


def of(events, kind):
    return [e for e in events if e["event"] == kind]


def scenario(results, name):
    """A scenario's result; a wow64_* one the driver could not run is skipped."""
    r = results[name]
    if "skipped" in r:
        pytest.skip(r["skipped"] + ": " + wine_programs.missing32())
    return r


def check_bits(r, wow64):
    """The session saw the program as WoW64 (32-bit) or not, as it was built."""
    assert r["wow64"] is wow64
    if wow64:
        assert number(r["program"], "image-base") == 0x400000    # i686 ld's default base
        assert number(r["program"], "bump-address") < 1 << 32


# (the 64-bit scenario, the same on the 32-bit build under WoW64)
BOTH = pytest.mark.parametrize("wow64", [False, True], ids=["x64", "wow64"])


def named(base, wow64, untraced=False):
    if untraced:
        return ("untraced32_" if wow64 else "untraced_") + base
    return ("wow64_" if wow64 else "") + base


def _file_byte(exe, address, image_base):
    import pefile
    pe = pefile.PE(exe, fast_load=True)
    offset = pe.get_offset_from_rva(address - image_base)
    with open(exe, "rb") as fh:
        fh.seek(offset)
        return fh.read(1)[0]


# ------------------------------------------------------------ debug events

def test_the_events_of_a_start_in_order(results):
    r = results["start"]
    lines, events = r["program"], r["events"]
    names = [e.get("name") for e in events]
    assert names[0] == "CREATE_PROCESS_DEBUG_EVENT"
    created = events[0]["info"]
    assert created["image_base"] == number(lines, "image-base")
    assert created["image_name"].lower().endswith("win_calls.exe")
    # Before the loader's breakpoint: the DLLs every program gets.
    initial = names.index("EXCEPTION_DEBUG_EVENT")
    early = [e["info"]["image_name"].lower() for e in events[1:initial]
             if e["name"] == "LOAD_DLL_DEBUG_EVENT"]
    assert any(n.endswith("ntdll.dll") for n in early)
    assert any(n.endswith("kernel32.dll") for n in early)
    loader = events[initial]
    assert loader["info"]["code"] == EXCEPTION_BREAKPOINT and "initial breakpoint" in loader["note"]
    # OutputDebugStringA then W, with the texts of the source.
    texts = [e["info"]["text"] for e in events if e.get("name") == "OUTPUT_DEBUG_STRING_EVENT"]
    assert texts == ["ksinspect ansi text", "ksinspect unicode \u00e9t\u00e9"]
    assert printed(lines, "ods") == [["2"]]
    # LoadLibraryW(version.dll): the base the program got.
    dll = int(printed(lines, "dll")[0][1], 16)
    loads = [e["info"] for e in events[initial:] if e.get("name") == "LOAD_DLL_DEBUG_EVENT"]
    assert any(l["base"] == dll and l["image_name"].lower().endswith("version.dll")
               for l in loads)
    # FreeLibrary: the same base unloaded.
    assert any(e["info"]["base"] == dll for e in events
               if e.get("name") == "UNLOAD_DLL_DEBUG_EVENT")
    assert names[-2] == "EXIT_PROCESS_DEBUG_EVENT" and events[-2]["info"]["exit_code"] == 5
    assert events[-1] == {"event": "exit", "pid": events[0]["pid"], "status": 5, "signal": None}
    assert r["exit_while_traced"] == 5
    assert all(e["pid"] == number(lines, "pid", 10) for e in events)
    assert not [e for e in events if e["event"] in ("hw", "sw", "guard")]


# --------------------------------------------------------- hardware breakpoints

@BOTH
def test_write_watchpoint_in_slot_2_and_in_a_later_thread(results, wow64):
    # WoW64: Dr0-Dr7 of the 32-bit WOW64_CONTEXT (Wow64SetThreadContext), read back
    # with Wow64GetThreadContext.
    r = scenario(results, named("hw_write", wow64))
    check_bits(r, wow64)
    lines, hits = r["program"], of(r["events"], "hw")
    # SDM §17.2.4: L2 = bit 4, R/W2 = 01 (bits 24-25), LEN2 = 11 (bits 26-27); bit 10
    # is reserved and reads as 1 (Figure 17-1).
    assert r["armed"]["dr7"] == (1 << 4) | (0b01 << 24) | (0b11 << 26) | (1 << 10)
    assert r["armed"]["dr7_read_back"] == r["armed"]["dr7"]
    assert r["armed"]["dr2_read_back"] == number(lines, "counter-address")
    values = [number(lines, "counter-initial", 10)] + [int(v) for _, v in printed(lines, "write")]
    thread_tid, _, thread_value = printed(lines, "thread")[0]
    values.append(int(thread_value))
    assert [(h["old"], h["new"]) for h in hits] == list(zip(values, values[1:]))
    main_tid = number(lines, "tid", 10)
    assert [h["tid"] for h in hits] == [main_tid] * 3 + [int(thread_tid)]
    assert int(thread_tid) != main_tid              # the thread created after arming
    for h in hits:
        assert h["slot"] == 2 and h["address"] == number(lines, "counter-address")
        assert h["dr6"]["raw"] == DR6_NOTHING | 1 << 2 and h["dr6"]["hits"] == [2]
    assert r["exit_while_traced"] == 0


@BOTH
def test_execute_breakpoint_on_a_function(results, wow64):
    r = scenario(results, named("hw_exec", wow64))
    check_bits(r, wow64)
    hits = of(r["events"], "hw")
    bump = number(r["program"], "bump-address")
    assert len(hits) == 4 == len(printed(r["program"], "write"))
    assert all(h["rip"] == bump and h["condition"] == "execute" and h["rip_symbol"] == "bump"
               and h["dr6"]["raw"] == DR6_NOTHING | 1 for h in hits)


# --------------------------------------------------------- software breakpoints

@BOTH
def test_int3_on_bump_as_the_notes_describe(results, win, wow64):
    r = scenario(results, named("sw", wow64))
    check_bits(r, wow64)
    lines, hits = r["program"], of(r["events"], "sw")
    bump = number(lines, "bump-address")
    assert r["armed"]["address"] == bump and r["armed"]["in_memory"] == 0xCC
    assert r["armed"]["original"] == _file_byte(win["exe32" if wow64 else "exe"], bump,
                                                number(lines, "image-base"))
    assert [h["hits"] for h in hits] == [1, 2, 3, 4, 5]
    assert all(h["rip"] == bump and h["original_byte"] == r["armed"]["original"] for h in hits)
    # The byte went back and the real instruction ran every time.
    assert program_results(lines) == program_results(
        results[named("sw", wow64, untraced=True)]["program"])


# ------------------------------------------------------------- guard pages

@BOTH
def test_guard_page_reports_the_accesses_the_program_made(results, wow64):
    r = scenario(results, named("guard", wow64))
    check_bits(r, wow64)
    lines, hits = r["program"], of(r["events"], "guard")
    assert r["armed"]["guarded"] == r["armed"]["original"] | PAGE_GUARD
    assert r["armed"]["page"] == number(lines, "page-address")
    assert [(h["address"], h["touch"]) for h in hits] == [
        (number(lines, "read-address"), "read"), (number(lines, "write-address"), "write")]
    assert all(h["si_code"] == "STATUS_GUARD_PAGE_VIOLATION" and h["rearmed"] for h in hits)
    assert r["report"]["pages_restored"] == 1 and r["report"]["errors"] == []
    assert printed(lines, "value") == [["42"]]
    assert program_results(lines) == program_results(
        results[named("guard", wow64, untraced=True)]["program"])


def test_write_guard_fires_once_as_an_access_violation(results):
    r = results["guard_write_once"]
    hits = of(r["events"], "guard")
    assert [(h["address"], h["touch"], h["si_code"], h["rearmed"]) for h in hits] == [
        (number(r["program"], "write-address"), "write", "EXCEPTION_ACCESS_VIOLATION", False)]
    assert printed(r["program"], "value") == [["42"]]


# ------------------------------------------------------- attach and restore

def test_attach_watch_and_let_go(results):
    r = results["attach"]
    lines = r["program"]
    assert r["pid"] == number(lines, "pid", 10)
    names = [e.get("name") for e in r["events"]]
    assert names[0] == "CREATE_PROCESS_DEBUG_EVENT"
    breakin = [e for e in r["events"] if e.get("note", "") and "break-in" in e["note"]]
    assert len(breakin) == 1 and breakin[0]["tid"] != number(lines, "tid", 10)
    hits = of(r["events"], "hw")
    writes = {int(v) for _, v in printed(lines, "write")}
    assert len(hits) == 3 and all(h["new"] in writes for h in hits)
    assert [h["old"] for h in hits[1:]] == [h["new"] for h in hits[:-1]]
    assert "already being debugged" in r["second_attach"]
    assert r["report"]["threads_debugregs_restored"] >= 1 and r["report"]["errors"] == []
    assert r["exit"] == 0
    assert program_results(lines)[-3:] == program_results(
        results["untraced_attach"]["program"])[-3:]


@BOTH
def test_an_exception_midway_restores_everything(results, win, wow64):
    # The look afterwards is a fresh attach reading Dr7 of every thread (the
    # 32-bit context's under WoW64), the byte and the page's protection.
    r = scenario(results, named("midway", wow64))
    report = r["report"]
    assert (report["bytes_restored"], report["threads_debugregs_restored"],
            report["pages_restored"], report["errors"]) == (1, 1, 1, [])
    lines = r["program"]
    look = r["look"]
    assert look["dr7"] and all(v == 0 for v in look["dr7"])
    assert look["byte"] == r["armed"]["original"] == _file_byte(
        win["exe32" if wow64 else "exe"], number(lines, "bump-address"),
        number(lines, "image-base"))
    assert look["protect"] == r["armed"]["protect"] and not look["protect"] & PAGE_GUARD
    assert r["exit"] == 0
    assert program_results(lines) == program_results(
        results[named("midway", wow64, untraced=True)]["program"])


def test_a_timeout_restores_everything(results):
    r = results["timeout"]
    assert 0.45 <= r["took"] < 3.0
    report = r["report"]
    assert (report["bytes_restored"], report["threads_debugregs_restored"],
            report["pages_restored"], report["errors"]) == (1, 1, 1, [])
    assert r["exit"] == 0
    assert program_results(r["program"]) == program_results(
        results["untraced_timeout"]["program"])


# ----------------------------------------------------------------- errors

def test_bad_targets_are_named(results):
    e = results["errors"]
    assert e["no_such_pid"] == ["NoSuchProcessError", "process 999996 does not exist"]
    assert e["symbol"][0] == "DecodeError" and "no_such_function" in e["symbol"][1]
    assert e["unmapped"] == ["DecodeError", "address 0x10 is not mapped in process %d"
                             % int(e["unmapped"][1].split()[-1])]
    assert e["unmapped_guard"][0] == "DecodeError" and "MEM_FREE" in e["unmapped_guard"][1]
    assert "does not export 'NoSuchExport'" in e["export"][1]
    assert "no module 'nosuch'" in e["module"][1]
    assert e["misaligned"][0] == e["exec_len"][0] == "EncodeError"
    assert e["hardware_after_refusals"] == 0
    assert e["missing_program"][0] == "NoSuchProcessError"
    # kernel32!Sleep through the target's export table equals what the program
    # got from GetProcAddress, and the debugger's own GetProcAddress.
    sleep = number(results["sw"]["program"], "sleep-address")
    assert e["sleep"] == e["own_sleep"] == sleep


def test_threads_and_their_context(results):
    r = results["threads"]
    tids = [t[0] for t in r["threads"]]
    assert number(r["program"], "tid", 10) in tids
    for _, regs in r["threads"]:
        assert regs["SegCs"] == 0x33           # the 64-bit user code segment (GDT index 6, RPL 3)
        assert regs["Rip"] and regs["Rsp"] % 8 == 0


# ------------------------------------------------------------ command line

def _cli_output(r):
    """ksinspect's JSON lines and the program's lines, which share one pipe: the
    program writes unbuffered, so a JSON line may land inside one of its lines
    ("w{...}" then "rite 19 ..."), and the two halves are joined again."""
    records, program, carry = [], [], ""
    for line in r["lines"]:
        at = line.find('{"event"')
        if at < 0:
            program.append(carry + line)
            carry = ""
        else:
            records.append(json.loads(line[at:]))
            carry += line[:at]
    if carry:
        program.append(carry)
    return records, program


@pytest.mark.parametrize("command", ["break", "events"])
def test_cli_kill_ends_the_program_at_the_close(results, command):
    # `--kill`: the program (60 calls, 100 ms apart) is still running when the
    # 2 s timeout ends the session; the close terminates it (TerminateProcess,
    # exit code 1), which the driver sees through its own process handle.
    r = results["cli_%s_kill" % command]
    assert r["status"] == 0, r["stderr"]
    records, program = _cli_output(r)
    assert [x["outcome"] for x in records if x["event"] == "end"] == ["killed"]
    assert r["ended_within_30s"] and r["program_exit"] == 1
    writes = printed(program, "write")
    assert len(writes) < 60 and not printed(program, "checksum")
    assert not [x for x in records if x.get("after_detach")]
    if command == "break":
        # bump() is called once before each "write" line: the last call may
        # be the one the program was killed after.
        hits = len(of(records, "sw"))
        assert len(writes) <= hits <= len(writes) + 1


@pytest.mark.parametrize("command", ["break", "events"])
def test_cli_without_kill_the_program_survives_the_detach(results, command):
    r = results["cli_%s_detach" % command]
    assert r["status"] == 0, r["stderr"]
    records, program = _cli_output(r)
    assert [x["outcome"] for x in records if x["event"] == "end"] == [
        "detached, the program runs on"]
    # It finishes on its own, with the results of a run nobody debugged.
    assert r["ended_within_30s"] and r["program_exit"] == 0
    assert program_results(program) == program_results(results["untraced_midway"]["program"])
    if command == "break":
        # `break` waits for the program it started, and says how it ended.
        assert not r["running_after_ksinspect"]
        assert [(x["status"], x["after_detach"]) for x in records if x["event"] == "exit"] \
            == [(0, True)]
    else:
        assert r["running_after_ksinspect"]          # `events` lets it go and returns

def _ksinspect(win, *argv, timeout=120):
    run = wine_programs.run_winpython(win["info"], "-m", "ksinspect", *argv, timeout=timeout)
    # When the checkout changed, the tool rebuilds the core first and cffi says
    # "generating ..._core.c" on stderr even with --quiet: not ksinspect's line.
    run.stderr = "".join(l for l in run.stderr.splitlines(True)
                         if not l.startswith("generating "))
    return run


@BOTH
def test_cli_break_jsonl(win, wow64):
    if wow64 and wine_programs.missing32():
        pytest.skip(wine_programs.missing32())
    run = _ksinspect(win, "break", "--sw", "bump", "--hw", "counter:w:4", "--format", "jsonl",
                     "--", _windows_path(win["exe32" if wow64 else "exe"]), "3", "0")
    assert run.returncode == 0, run.stderr
    records, program = _cli_output({"lines": run.stdout.splitlines()})
    kinds = [r["event"] for r in records]
    assert kinds.count("sw") == 3 and kinds.count("hw") == 3
    assert all(r["rip"] == number(program, "bump-address") for r in records if r["event"] == "sw")
    values = [number(program, "counter-initial", 10)] + [int(v) for _, v in
                                                         printed(program, "write")]
    assert [(r["old"], r["new"]) for r in records if r["event"] == "hw"] == list(
        zip(values, values[1:]))
    assert records[-1]["event"] in ("end", "exit")


def test_cli_events_and_threads(win):
    run = _ksinspect(win, "events", "--format", "jsonl", "--", _windows_path(win["exe"]), "1",
                     "0", "ods", "exit=3")
    assert run.returncode == 0, run.stderr
    records = [json.loads(l) for l in run.stdout.splitlines() if l.startswith("{")]
    assert records[0]["name"] == "CREATE_PROCESS_DEBUG_EVENT"
    assert [r["info"]["text"] for r in records if r.get("name") == "OUTPUT_DEBUG_STRING_EVENT"] \
        == ["ksinspect ansi text", "ksinspect unicode \u00e9t\u00e9"]
    assert [r for r in records if r["event"] == "exit"][0]["status"] == 3


@pytest.mark.parametrize("argv, status, message", [
    (["break", "--pid", "999996", "--sw", "0x1000"], 1, "process 999996 does not exist"),
    (["threads", "--pid", "999996"], 1, "process 999996 does not exist"),
    (["events", "--pid", "999996"], 1, "process 999996 does not exist"),
])
def test_cli_bad_pid_is_one_line(win, argv, status, message):
    run = _ksinspect(win, *argv)
    assert run.returncode == status and message in run.stderr, (run.returncode, run.stderr)
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr


def test_cli_unknown_symbol_is_a_usage_error(win):
    run = _ksinspect(win, "break", "--sw", "kernel32!NoSuchExport", "--",
                     _windows_path(win["exe"]), "1", "0")
    assert run.returncode == 2 and "does not export" in run.stderr
    assert run.stderr.count("\n") == 1


def _descendants(pid):
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as fh:
                parent = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid:
            found += [int(entry)] + _descendants(int(entry))
    return found


def _comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def test_ctrl_c_restores_everything_and_the_program_runs_on(win):
    # Wine turns a SIGINT to python.exe into the console's Ctrl-C, which the
    # Windows CPython raises as KeyboardInterrupt in the debug loop.
    env = wine_programs.wine_environment(win["info"]["wine_prefix"])
    proc = subprocess.Popen([sys.executable, wine_programs.WINPYTHON, "--quiet", "-m",
                             "ksinspect", "break", "--sw", "bump", "--hw", "counter:w:4",
                             "--guard", "page", "--format", "jsonl", "--",
                             _windows_path(win["exe"]), "40", "40"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if '"event": "sw"' in line and '"hits": 3' in line:
                break
        pythons = [p for p in _descendants(proc.pid) if _comm(p) == "python.exe"]
        assert len(pythons) == 1, pythons
        os.kill(pythons[0], signal.SIGINT)           # ours, found by PID: nobody else's
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err.strip() == "ksinspect: interrupted: breakpoints removed, process detached"
    lines = "".join(seen).splitlines() + out.splitlines()
    end = [json.loads(l) for l in lines if l.startswith('{"event": "end"')][0]
    assert (end["bytes_restored"], end["threads_debugregs_restored"], end["pages_restored"],
            end["errors"]) == (1, 1, 1, [])
    exit_ = [json.loads(l) for l in lines if l.startswith('{"event": "exit"')][0]
    assert exit_["after_detach"] and exit_["status"] == 0
    untraced = wine_programs.run_winpython(
        win["info"], "-c", "import subprocess, sys; sys.stdout.write(subprocess.run("
        "[sys.argv[1], '40', '0'], capture_output=True, text=True).stdout)",
        _windows_path(win["exe"]))
    keep = ("calls", "counter", "checksum")
    assert [l for l in lines if l.startswith(keep)] == \
        [l for l in untraced.stdout.splitlines() if l.startswith(keep)]


WOW64_SIDE = r"""
import json, subprocess, sys
from ksinspect.live.win32_debugger import thread_contexts
proc = subprocess.Popen([sys.argv[1], "20", "30", "wait"], stdout=subprocess.PIPE, text=True)
lines = []
while not lines or lines[-1] != "ready":
    lines.append(proc.stdout.readline().strip())
threads = [(tid, ctx32.registers if ctx32 is not None else None)
           for tid, ctx, ctx32 in thread_contexts(proc.pid)]
proc.stdout.read()
proc.wait()
print(json.dumps({"threads": threads, "program": lines}))
"""


def test_a_wow64_threads_32_bit_context(win):
    reason = wine_programs.missing32()
    if reason:
        pytest.skip(reason)
    exe = win["root"] / "win_calls32.exe"
    subprocess.run([wine_programs.MINGW[32], "-O1", "-o", str(exe), SOURCE], check=True)
    run = wine_programs.run_winpython(win["info"], "-c", WOW64_SIDE, _windows_path(exe))
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    main_tid = number(data["program"], "tid", 10)
    regs = dict((tid, r) for tid, r in data["threads"])[main_tid]
    assert regs is not None                       # Wow64GetThreadContext answered
    assert regs["SegCs"] == 0x23                  # the 32-bit user code segment (GDT index 4, RPL 3)
    assert regs["Eip"] and regs["Esp"] % 4 == 0
    assert number(data["program"], "image-base") == 0x400000   # a 32-bit image
