/* The floor for a breakpoint hit through the Win32 debug API
   (bench/win32_breakpoints.py): CreateProcess(DEBUG_ONLY_THIS_PROCESS) of
   PROGRAM N 0 and, at the loader's breakpoint, one breakpoint of KIND at
   ADDRESS, with nothing but the debug API calls each kind needs:

   hw     Dr0 = ADDRESS, Dr7 = a 4-byte write watchpoint in the main thread;
          per hit GetThreadContext, a ReadProcessMemory of the value, Dr6
          cleared with SetThreadContext(CONTEXT_DEBUG_REGISTERS).
   sw     the byte at ADDRESS kept, 0xCC written, FlushInstructionCache; per
          hit the byte put back, Rip = ADDRESS and the trap flag set
          (SetThreadContext(CONTEXT_CONTROL)), and at the single step 0xCC
          written again.
   guard  VirtualQueryEx, then VirtualProtectEx adding PAGE_GUARD to the page
          at ADDRESS; per STATUS_GUARD_PAGE_VIOLATION the trap flag set, and at
          the single step PAGE_GUARD added again (not after the Nth hit: the
          program then reads the whole page for its checksum).

   Every event ends with ContinueDebugEvent. Prints "HITS SECONDS"
   (QueryPerformanceCounter, from the arming to the exit).

     win32_loop.exe KIND PROGRAM N ADDRESS_HEX */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void set_trap_flag(HANDLE thread)
{
    CONTEXT ctx __attribute__((aligned(16)));
    ctx.ContextFlags = CONTEXT_CONTROL;
    GetThreadContext(thread, &ctx);
    ctx.EFlags |= 0x100;
    SetThreadContext(thread, &ctx);
}

int main(int argc, char **argv)
{
    if (argc < 5)
        return 2;
    const char *kind = argv[1];
    int hw = !strcmp(kind, "hw"), sw = !strcmp(kind, "sw"), guard = !strcmp(kind, "guard");
    if (!hw && !sw && !guard)
        return 2;
    int n = atoi(argv[3]);
    char line[1024];
    snprintf(line, sizeof line, "\"%s\" %s 0", argv[2], argv[3]);
    DWORD64 address = _strtoui64(argv[4], NULL, 16);
    STARTUPINFOA si;
    PROCESS_INFORMATION pi;
    ZeroMemory(&si, sizeof si);
    si.cb = sizeof si;
    si.dwFlags = STARTF_USESTDHANDLES;
    si.hStdOutput = CreateFileA("NUL", GENERIC_WRITE, 0, NULL, OPEN_EXISTING, 0, NULL);
    si.hStdInput = si.hStdError = si.hStdOutput;
    if (!CreateProcessA(NULL, line, NULL, NULL, TRUE, DEBUG_ONLY_THIS_PROCESS, NULL, NULL,
                        &si, &pi))
        return 3;
    SYSTEM_INFO sys;
    GetSystemInfo(&sys);
    DWORD64 page = address & ~(DWORD64)(sys.dwPageSize - 1);
    DWORD protect = 0, old;
    unsigned char original = 0, int3 = 0xCC;
    LARGE_INTEGER freq, start, end;
    QueryPerformanceFrequency(&freq);
    int hits = 0, armed = 0, stepping = 0;
    for (;;) {
        DEBUG_EVENT ev;
        if (!WaitForDebugEvent(&ev, INFINITE))
            return 4;
        DWORD status = DBG_CONTINUE;
        if (ev.dwDebugEventCode == CREATE_PROCESS_DEBUG_EVENT)
            CloseHandle(ev.u.CreateProcessInfo.hFile);
        else if (ev.dwDebugEventCode == LOAD_DLL_DEBUG_EVENT)
            CloseHandle(ev.u.LoadDll.hFile);
        else if (ev.dwDebugEventCode == EXCEPTION_DEBUG_EVENT) {
            DWORD code = ev.u.Exception.ExceptionRecord.ExceptionCode;
            DWORD64 at = (DWORD64)ev.u.Exception.ExceptionRecord.ExceptionAddress;
            CONTEXT ctx __attribute__((aligned(16)));
            HANDLE t = OpenThread(THREAD_ALL_ACCESS, FALSE, ev.dwThreadId);
            if (code == EXCEPTION_BREAKPOINT && !armed) {
                armed = 1;
                if (hw) {
                    ctx.ContextFlags = CONTEXT_DEBUG_REGISTERS;
                    GetThreadContext(pi.hThread, &ctx);
                    ctx.Dr0 = address;
                    ctx.Dr7 = 1 | (1 << 16) | (3 << 18);
                    SetThreadContext(pi.hThread, &ctx);
                } else if (sw) {
                    ReadProcessMemory(pi.hProcess, (void *)address, &original, 1, NULL);
                    WriteProcessMemory(pi.hProcess, (void *)address, &int3, 1, NULL);
                    FlushInstructionCache(pi.hProcess, (void *)address, 1);
                } else {
                    MEMORY_BASIC_INFORMATION mbi;
                    VirtualQueryEx(pi.hProcess, (void *)page, &mbi, sizeof mbi);
                    protect = mbi.Protect;
                    VirtualProtectEx(pi.hProcess, (void *)page, sys.dwPageSize,
                                     protect | PAGE_GUARD, &old);
                }
                QueryPerformanceCounter(&start);
            } else if (sw && code == EXCEPTION_BREAKPOINT && at == address) {
                hits++;
                WriteProcessMemory(pi.hProcess, (void *)address, &original, 1, NULL);
                FlushInstructionCache(pi.hProcess, (void *)address, 1);
                ctx.ContextFlags = CONTEXT_CONTROL;
                GetThreadContext(t, &ctx);
                ctx.Rip = address;
                ctx.EFlags |= 0x100;
                SetThreadContext(t, &ctx);
                stepping = 1;
            } else if (guard && code == STATUS_GUARD_PAGE_VIOLATION) {
                hits++;            /* the system has taken PAGE_GUARD off */
                set_trap_flag(t);
                stepping = 1;
            } else if (code == EXCEPTION_SINGLE_STEP && stepping) {
                stepping = 0;
                if (sw) {
                    WriteProcessMemory(pi.hProcess, (void *)address, &int3, 1, NULL);
                    FlushInstructionCache(pi.hProcess, (void *)address, 1);
                } else if (hits < n)
                    VirtualProtectEx(pi.hProcess, (void *)page, sys.dwPageSize,
                                     protect | PAGE_GUARD, &old);
            } else if (hw && code == EXCEPTION_SINGLE_STEP) {
                ctx.ContextFlags = CONTEXT_ALL;
                GetThreadContext(t, &ctx);
                unsigned int value;
                ReadProcessMemory(pi.hProcess, (void *)address, &value, 4, NULL);
                ctx.Dr6 = 0xFFFF0FF0;
                ctx.ContextFlags = CONTEXT_DEBUG_REGISTERS;
                SetThreadContext(t, &ctx);
                hits++;
            } else if (code != EXCEPTION_BREAKPOINT)
                status = DBG_EXCEPTION_NOT_HANDLED;
            CloseHandle(t);
        }
        ContinueDebugEvent(ev.dwProcessId, ev.dwThreadId, status);
        if (ev.dwDebugEventCode == EXIT_PROCESS_DEBUG_EVENT)
            break;
    }
    QueryPerformanceCounter(&end);
    printf("%d %.6f\n", hits, (double)(end.QuadPart - start.QuadPart) / freq.QuadPart);
    return 0;
}
