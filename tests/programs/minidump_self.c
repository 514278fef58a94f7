/* minidump_self.c: a Windows x64 program that writes a full-memory minidump of
 * itself and prints what it knows of itself, for ksinspect's minidump tests
 * (tools/make_minidump_fixture.py makes tests/data/minidump/ from it).
 *
 * Build: x86_64-w64-mingw32-gcc -O1 -o minidump_self.exe minidump_self.c -lpsapi -ldbghelp
 *        (or i686-w64-mingw32-gcc: a 32-bit program, whose dump holds x86 CONTEXTs)
 * Run:   minidump_self.exe OUT.dmp [--masquerade]   (--masquerade: x64 only)
 *
 * It prints `key=value` lines on stdout, each flushed, from Windows APIs:
 *   pid, peb (NtQueryInformationProcess), teb and tid (NtCurrentTeb and
 *   GetCurrentThreadId of the main thread), image_base, command_line,
 *   module=<base> <size> <entry point> <path>    (EnumProcessModules)
 *   worker_tid, worker_teb (NtQueryInformationThread ThreadBasicInformation)
 *   worker_loop=<start> <end>                     the code the worker spins in
 *   worker_<reg>=<value>                          GetThreadContext(CONTEXT_ALL) of
 *       the suspended worker: rip rsp r12 r13 r14 r15 (x86: eip esp ebx esi edi ebp),
 *       dr0 dr7 eflags segcs segss
 *   worker_context=<hex>                          that CONTEXT's 1232 bytes
 *   watched=<address>                             what Dr0 watches
 *   exception_code, exception_address, exception_tid
 *   dump=<path> ok=<MiniDumpWriteDump's result>
 * With --masquerade it first spoofs its PEB (win_self.h) and prints
 * spoofed_image_path, spoofed_command_line and unlinked=<base> <path>.
 *
 * The worker thread spins with R12-R15 holding marker values; the main thread
 * suspends it, gives it a 4-byte write watchpoint on `watched` with
 * SetThreadContext (Dr0, Dr7 = 0xd0001: L0, R/W0 = 01, LEN0 = 11; Intel SDM
 * vol. 3B §17.2.4), reads its context back, then raises a software exception
 * whose vectored handler writes the dump with the exception's pointers, so the
 * dump has an exception stream.
 */
#include "win_self.h"

#include <dbghelp.h>

#define EXCEPTION_CODE 0xE0000016u

typedef struct {
    LONG ExitStatus;
    PVOID TebBaseAddress;
    ULONG_PTR UniqueProcess;
    ULONG_PTR UniqueThread;
    ULONG_PTR AffinityMask;
    LONG Priority;
    LONG BasePriority;
} THREAD_INFO;

volatile DWORD watched = 0;
static const char *dump_path;

extern void worker_loop_start(void);
extern void worker_loop_end(void);

/* The worker: marker values in four registers, then spin until suspended (forever).
   x64: R12-R15; x86 (built with i686-w64-mingw32-gcc, whose C symbols carry a leading
   underscore and stdcall ones an @bytes suffix): EBX, ESI, EDI, EBP. */
#ifdef _WIN64
__asm__(".text\n"
        ".globl worker_main\n"
        "worker_main:\n"
        "  movabs $0x1212121212121212, %r12\n"
        "  movabs $0x1313131313131313, %r13\n"
        "  movabs $0x1414141414141414, %r14\n"
        "  movabs $0x1515151515151515, %r15\n"
        ".globl worker_loop_start\n"
        "worker_loop_start:\n"
        "  pause\n"
        "  jmp worker_loop_start\n"
        ".globl worker_loop_end\n"
        "worker_loop_end:\n"
        "  ret\n");
#else
__asm__(".text\n"
        ".globl _worker_main@4\n"
        "_worker_main@4:\n"
        "  movl $0x12121212, %ebx\n"
        "  movl $0x13131313, %esi\n"
        "  movl $0x14141414, %edi\n"
        "  movl $0x15151515, %ebp\n"
        ".globl _worker_loop_start\n"
        "_worker_loop_start:\n"
        "  pause\n"
        "  jmp _worker_loop_start\n"
        ".globl _worker_loop_end\n"
        "_worker_loop_end:\n"
        "  ret $4\n");
#endif
extern DWORD WINAPI worker_main(LPVOID);

static LONG WINAPI on_exception(EXCEPTION_POINTERS *ep)
{
    if (ep->ExceptionRecord->ExceptionCode != EXCEPTION_CODE)
        return EXCEPTION_CONTINUE_SEARCH;
    put_hex_line("exception_code", ep->ExceptionRecord->ExceptionCode);
    put_hex_line("exception_address", (ULONG_PTR)ep->ExceptionRecord->ExceptionAddress);
    printf("exception_tid=%lu", GetCurrentThreadId());
    line_end();
    HANDLE file = CreateFileA(dump_path, GENERIC_WRITE, 0, NULL, CREATE_ALWAYS,
                              FILE_ATTRIBUTE_NORMAL, NULL);
    MINIDUMP_EXCEPTION_INFORMATION mei;
    mei.ThreadId = GetCurrentThreadId();
    mei.ExceptionPointers = ep;
    mei.ClientPointers = FALSE;
    BOOL ok = file != INVALID_HANDLE_VALUE &&
        MiniDumpWriteDump(GetCurrentProcess(), GetCurrentProcessId(), file,
                          MiniDumpWithFullMemory, &mei, NULL, NULL);
    if (file != INVALID_HANDLE_VALUE)
        CloseHandle(file);
    printf("dump=%s ok=%d", dump_path, ok ? 1 : 0);
    line_end();
    return EXCEPTION_CONTINUE_EXECUTION;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        printf("error=usage: minidump_self.exe OUT.dmp [--masquerade]");
        line_end();
        return 2;
    }
    dump_path = argv[1];
    HANDLE self = GetCurrentProcess();
    BASIC_INFO info;
    if (basic_info(&info))
        return 1;
    printf("pid=%lu", GetCurrentProcessId());
    line_end();
    printf("tid=%lu", GetCurrentThreadId());
    line_end();
    put_self(&info);
#ifdef _WIN64
    if (argc > 2 && strcmp(argv[2], "--masquerade") == 0 &&
        masquerade((unsigned char *)info.PebBaseAddress))
        return 1;
#else
    printf("arch=x86");
    line_end();
#endif
    if (put_modules())
        return 1;

    DWORD worker_tid = 0;
    HANDLE worker = CreateThread(NULL, 0, worker_main, NULL, 0, &worker_tid);
    Sleep(200);                              /* let it reach the loop */
    SuspendThread(worker);
    THREAD_INFO ti;
    memset(&ti, 0, sizeof ti);
    ULONG got = 0;
    nt_query("NtQueryInformationThread")(worker, 0 /* ThreadBasicInformation */, &ti,
                                          sizeof ti, &got);
    printf("worker_tid=%lu", worker_tid);
    line_end();
    put_hex_line("worker_teb", (ULONG_PTR)ti.TebBaseAddress);
    printf("worker_loop=0x%llx 0x%llx", (unsigned long long)(ULONG_PTR)worker_loop_start,
           (unsigned long long)(ULONG_PTR)worker_loop_end);
    line_end();
    put_hex_line("watched", (ULONG_PTR)&watched);

    CONTEXT ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.ContextFlags = CONTEXT_DEBUG_REGISTERS;
    ctx.Dr0 = (ULONG_PTR)&watched;
    ctx.Dr7 = 0xd0001;
    if (!SetThreadContext(worker, &ctx)) {
        printf("error=SetThreadContext failed: %lu", GetLastError());
        line_end();
    }
    memset(&ctx, 0, sizeof ctx);
    ctx.ContextFlags = CONTEXT_ALL;
    GetThreadContext(worker, &ctx);
    const struct { const char *key; ULONG_PTR value; } registers[] = {
#ifdef _WIN64
        {"worker_rip", ctx.Rip}, {"worker_rsp", ctx.Rsp}, {"worker_r12", ctx.R12},
        {"worker_r13", ctx.R13}, {"worker_r14", ctx.R14}, {"worker_r15", ctx.R15},
#else
        {"worker_eip", ctx.Eip}, {"worker_esp", ctx.Esp}, {"worker_ebx", ctx.Ebx},
        {"worker_esi", ctx.Esi}, {"worker_edi", ctx.Edi}, {"worker_ebp", ctx.Ebp},
#endif
        {"worker_dr0", ctx.Dr0}, {"worker_dr7", ctx.Dr7}, {"worker_eflags", ctx.EFlags},
        {"worker_segcs", ctx.SegCs}, {"worker_segss", ctx.SegSs},
        {"worker_context_flags", ctx.ContextFlags},
    };
    for (size_t i = 0; i < sizeof registers / sizeof registers[0]; i++)
        put_hex_line(registers[i].key, registers[i].value);
    printf("worker_context=");                /* the whole CONTEXT, as bytes */
    for (size_t i = 0; i < sizeof ctx; i++)
        printf("%02x", ((unsigned char *)&ctx)[i]);
    line_end();

    AddVectoredExceptionHandler(1, on_exception);
    ULONG_PTR args[2] = {0x1234, (ULONG_PTR)&watched};
    RaiseException(EXCEPTION_CODE, 0, 2, args);
    printf("done");
    line_end();
    TerminateProcess(self, 0);               /* the worker is never resumed */
    return 0;
}
