/* peb_self.c: a Windows x64 program that says what it knows about itself,
 * for ksinspect's live PEB tests under Wine (tests/test_live_wine.py).
 *
 * Build: x86_64-w64-mingw32-gcc -O2 -o peb_self.exe peb_self.c -lpsapi
 *
 * It prints `key=value` lines on stdout, each flushed, from Windows APIs
 * (independent of ksinspect's layouts):
 *   pid=<GetCurrentProcessId, decimal>
 *   peb=<PebBaseAddress from NtQueryInformationProcess(ProcessBasicInformation)>
 *   teb=<NtCurrentTeb() of the main thread>
 *   image_base=<GetModuleHandleW(NULL)>
 *   command_line=<GetCommandLineW as UTF-8>
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
 * x64 definitions (winternl.h; PEB.Ldr at 0x18, PEB.ProcessParameters at
 * 0x20, RTL_USER_PROCESS_PARAMETERS.ImagePathName at 0x60 and CommandLine
 * at 0x70, LDR_DATA_TABLE_ENTRY.InLoadOrderLinks at 0), written out here
 * so the program does not depend on ksinspect's layout files.
 */
#include <windows.h>
#include <psapi.h>
#include <stdio.h>
#include <string.h>
#include <wchar.h>

typedef struct {
    LONG ExitStatus;
    PVOID PebBaseAddress;
    ULONG_PTR AffinityMask;
    LONG BasePriority;
    ULONG_PTR UniqueProcessId;
    ULONG_PTR InheritedFromUniqueProcessId;
} BASIC_INFO;

typedef LONG (WINAPI *NtQueryInformationProcess_t)(HANDLE, ULONG, PVOID, ULONG, PULONG);

typedef struct {
    USHORT Length;
    USHORT MaximumLength;
    PWSTR Buffer;
} USTR;

static void put_utf8(const wchar_t *text, int chars)
{
    char buffer[8192];
    int n = WideCharToMultiByte(CP_UTF8, 0, text, chars, buffer, sizeof buffer - 1, NULL, NULL);
    if (n < 0)
        n = 0;
    fwrite(buffer, 1, (size_t)n, stdout);
}

static void line_end(void)
{
    fputc('\n', stdout);
    fflush(stdout);
}

static void set_ustr(USTR *target, const wchar_t *text)
{
    size_t chars = wcslen(text);
    PWSTR copy = (PWSTR)HeapAlloc(GetProcessHeap(), 0, (chars + 1) * sizeof(wchar_t));
    memcpy(copy, text, (chars + 1) * sizeof(wchar_t));
    target->Buffer = copy;
    target->Length = (USHORT)(chars * sizeof(wchar_t));
    target->MaximumLength = (USHORT)((chars + 1) * sizeof(wchar_t));
}

static int masquerade(unsigned char *peb)
{
    static const wchar_t fake_path[] = L"C:\\Windows\\System32\\svchost.exe";
    static const wchar_t fake_cmd[] = L"C:\\Windows\\System32\\svchost.exe -k netsvcs";
    unsigned char *params = *(unsigned char **)(peb + 0x20);
    set_ustr((USTR *)(params + 0x60), fake_path);
    set_ustr((USTR *)(params + 0x70), fake_cmd);
    printf("spoofed_image_path=");
    put_utf8(fake_path, (int)wcslen(fake_path));
    line_end();
    printf("spoofed_command_line=");
    put_utf8(fake_cmd, (int)wcslen(fake_cmd));
    line_end();

    /* A DLL the program does not otherwise use, then hidden from the
     * load-order list only (it stays in the memory and init-order lists). */
    HMODULE hidden = LoadLibraryW(L"version.dll");
    if (hidden == NULL) {
        printf("error=LoadLibraryW(version.dll) failed: %lu", GetLastError());
        line_end();
        return 1;
    }
    unsigned char *ldr = *(unsigned char **)(peb + 0x18);
    LIST_ENTRY *head = (LIST_ENTRY *)(ldr + 0x10);   /* PEB_LDR_DATA.InLoadOrderModuleList */
    for (LIST_ENTRY *link = head->Flink; link != head; link = link->Flink) {
        unsigned char *entry = (unsigned char *)link;   /* InLoadOrderLinks is at offset 0 */
        if (*(HMODULE *)(entry + 0x30) == hidden) {     /* LDR_DATA_TABLE_ENTRY.DllBase */
            link->Blink->Flink = link->Flink;
            link->Flink->Blink = link->Blink;
            link->Flink = link->Blink = link;
            wchar_t path[MAX_PATH];
            DWORD n = GetModuleFileNameW(hidden, path, MAX_PATH);
            printf("unlinked=0x%llx ", (unsigned long long)(ULONG_PTR)hidden);
            put_utf8(path, (int)n);
            line_end();
            return 0;
        }
    }
    printf("error=version.dll not found in InLoadOrderModuleList");
    line_end();
    return 1;
}

int main(int argc, char **argv)
{
    HANDLE self = GetCurrentProcess();
    NtQueryInformationProcess_t query = (NtQueryInformationProcess_t)(void (*)(void))
        GetProcAddress(GetModuleHandleW(L"ntdll.dll"), "NtQueryInformationProcess");
    BASIC_INFO info;
    ULONG got = 0;
    memset(&info, 0, sizeof info);
    if (query == NULL || query(self, 0 /* ProcessBasicInformation */, &info, sizeof info, &got) != 0) {
        printf("error=NtQueryInformationProcess failed");
        line_end();
        return 1;
    }
    printf("pid=%lu", GetCurrentProcessId());
    line_end();
    printf("peb=0x%llx", (unsigned long long)(ULONG_PTR)info.PebBaseAddress);
    line_end();
    printf("teb=0x%llx", (unsigned long long)(ULONG_PTR)NtCurrentTeb());
    line_end();
    printf("image_base=0x%llx", (unsigned long long)(ULONG_PTR)GetModuleHandleW(NULL));
    line_end();
    printf("command_line=");
    const wchar_t *command_line = GetCommandLineW();
    put_utf8(command_line, (int)wcslen(command_line));
    line_end();

    if (argc > 1 && strcmp(argv[1], "--masquerade") == 0 && masquerade((unsigned char *)info.PebBaseAddress))
        return 1;

    HMODULE modules[512];
    DWORD needed = 0;
    if (!EnumProcessModules(self, modules, sizeof modules, &needed)) {
        printf("error=EnumProcessModules failed: %lu", GetLastError());
        line_end();
        return 1;
    }
    for (DWORD i = 0; i < needed / sizeof(HMODULE) && i < 512; i++) {
        MODULEINFO mi;
        wchar_t path[MAX_PATH];
        if (!GetModuleInformation(self, modules[i], &mi, sizeof mi))
            continue;
        DWORD n = GetModuleFileNameExW(self, modules[i], path, MAX_PATH);
        printf("module=0x%llx 0x%lx 0x%llx ", (unsigned long long)(ULONG_PTR)mi.lpBaseOfDll,
               (unsigned long)mi.SizeOfImage, (unsigned long long)(ULONG_PTR)mi.EntryPoint);
        put_utf8(path, (int)n);
        line_end();
    }
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
