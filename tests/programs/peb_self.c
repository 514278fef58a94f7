/* peb_self.c: a Windows x64 program that says what it knows about itself,
 * for ksinspect's live PEB tests under Wine (tests/test_live_wine.py).
 *
 * Build: x86_64-w64-mingw32-gcc -O2 -o peb_self.exe peb_self.c -lpsapi
 *   (or i686-w64-mingw32-gcc for the 32-bit build: a WoW64 process on x64)
 *
 * It prints `key=value` lines on stdout, each flushed, from Windows APIs
 * (independent of ksinspect's layouts):
 *   pid=<GetCurrentProcessId, decimal>
 *   unix_pid=<under Wine only: the Linux PID, from a raw Linux getpid system
 *            call (Wine runs the program's code on the Linux kernel)>
 *   parent_pid=<InheritedFromUniqueProcessId, decimal>
 *   bits=<64 or 32: how it was built>
 *   wow64=<IsWow64Process: 1 for a 32-bit program on 64-bit Windows>
 *   peb=<PebBaseAddress from NtQueryInformationProcess(ProcessBasicInformation)
 *        in its own bitness: the 32-bit PEB of a 32-bit program>
 *   teb=<NtCurrentTeb() of the main thread>
 *   image_base=<GetModuleHandleW(NULL)>
 *   command_line=<GetCommandLineW as UTF-8>
 *   env=<one string of GetEnvironmentStringsW as UTF-8; one line each>
 *   module=<base> <size> <entry point> <path as UTF-8>   (EnumProcessModules,
 *          GetModuleInformation, GetModuleFileNameExW; one line per module)
 * With --masquerade as the first argument it then spoofs its own PEB the way
 * malware does (ProcessParameters->ImagePathName and ->CommandLine point at
 * new strings; a freshly loaded DLL is unlinked from InLoadOrderModuleList
 * only) and prints:
 *   spoofed_image_path=<UTF-8>  spoofed_command_line=<UTF-8>
 *   unlinked=<base> <path as UTF-8>
 * Then "ready", and it waits: each "ping" line on stdin is answered with
 * "pong <n>"; end of input ends the program.
 *
 * The PEB/loader offsets used for the masquerade are those of the public
 * definitions (winternl.h; x64: PEB.Ldr at 0x18, PEB.ProcessParameters at
 * 0x20, RTL_USER_PROCESS_PARAMETERS.ImagePathName at 0x60 and CommandLine
 * at 0x70, PEB_LDR_DATA.InLoadOrderModuleList at 0x10,
 * LDR_DATA_TABLE_ENTRY.DllBase at 0x30; x86: 0x0c, 0x10, 0x38, 0x40, 0x0c
 * and 0x18; InLoadOrderLinks at 0 in both), written out here so the program
 * does not depend on ksinspect's layout files.
 */
#include "win_self.h"

/* Linux getpid() made directly (x86-64: syscall 39; i386: int 0x80, 20):
 * only under Wine, where the program runs as a Linux process. */
static long linux_getpid(void)
{
    long result;
#if defined(__x86_64__)
    __asm__ volatile("syscall" : "=a"(result) : "a"(39L) : "rcx", "r11", "memory");
#else
    __asm__ volatile("int $0x80" : "=a"(result) : "a"(20L) : "memory");
#endif
    return result;
}

int main(int argc, char **argv)
{
    BASIC_INFO info;
    if (basic_info(&info))
        return 1;
    printf("pid=%lu", GetCurrentProcessId());
    line_end();
    if (GetProcAddress(GetModuleHandleW(L"ntdll.dll"), "wine_get_version") != NULL) {
        printf("unix_pid=%ld", linux_getpid());
        line_end();
    }
    printf("parent_pid=%lu", (unsigned long)info.InheritedFromUniqueProcessId);
    line_end();
    BOOL wow64 = FALSE;
    IsWow64Process(GetCurrentProcess(), &wow64);
    printf("bits=%d", BITS);
    line_end();
    printf("wow64=%d", wow64 ? 1 : 0);
    line_end();
    put_self(&info);
    wchar_t *environment = GetEnvironmentStringsW();
    for (const wchar_t *item = environment; item != NULL && *item; item += wcslen(item) + 1)
        put_wide_line("env", item);
    FreeEnvironmentStringsW(environment);

    if (argc > 1 && strcmp(argv[1], "--masquerade") == 0 && masquerade((unsigned char *)info.PebBaseAddress))
        return 1;
    if (put_modules())
        return 1;
    printf("ready");
    line_end();

    char request[256];
    unsigned long pongs = 0;
    while (fgets(request, sizeof request, stdin) != NULL) {
        if (strncmp(request, "ping", 4) == 0) {
            printf("pong %lu", ++pongs);
            line_end();
        }
    }
    return 0;
}
