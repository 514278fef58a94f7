/* win_self.h: helpers shared by the Windows test programs (peb_self.c,
 * minidump_self.c): UTF-8 output of wide strings, the program's own PEB from
 * NtQueryInformationProcess, the `key=value` lines both print about themselves
 * (peb, teb, image_base, command_line, one module= line per loaded module), and
 * the PEB masquerade
 * (spoofed ImagePathName and CommandLine, version.dll unlinked from
 * InLoadOrderModuleList), whose offsets (x64 and x86) are written out from
 * the public winternl.h definitions so the programs do not depend on
 * ksinspect. */
#ifndef WIN_SELF_H
#define WIN_SELF_H
#include <windows.h>
#include <psapi.h>
#include <stdio.h>
#include <string.h>
#include <wchar.h>

#ifdef _WIN64
enum { PEB_LDR = 0x18, PEB_PARAMS = 0x20, PARAMS_IMAGE = 0x60, PARAMS_CMD = 0x70,
       LDR_LOAD_LIST = 0x10, ENTRY_DLLBASE = 0x30, BITS = 64 };
#else
enum { PEB_LDR = 0x0c, PEB_PARAMS = 0x10, PARAMS_IMAGE = 0x38, PARAMS_CMD = 0x40,
       LDR_LOAD_LIST = 0x0c, ENTRY_DLLBASE = 0x18, BITS = 32 };
#endif


/* PROCESS_BASIC_INFORMATION (winternl.h), with the fields the programs print. */
typedef struct {
    LONG ExitStatus;
    PVOID PebBaseAddress;
    ULONG_PTR AffinityMask;
    LONG BasePriority;
    ULONG_PTR UniqueProcessId;
    ULONG_PTR InheritedFromUniqueProcessId;
} BASIC_INFO;

typedef LONG (WINAPI *NtQueryInformation_t)(HANDLE, ULONG, PVOID, ULONG, PULONG);

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

/* key=<text as UTF-8> */
static void put_wide_line(const char *key, const wchar_t *text)
{
    printf("%s=", key);
    put_utf8(text, (int)wcslen(text));
    line_end();
}

static void put_hex_line(const char *key, ULONG_PTR value)
{
    printf("%s=0x%llx", key, (unsigned long long)value);
    line_end();
}

/* ntdll's NtQueryInformationProcess or NtQueryInformationThread, looked up by name. */
static NtQueryInformation_t nt_query(const char *name)
{
    return (NtQueryInformation_t)(void (*)(void))GetProcAddress(GetModuleHandleW(L"ntdll.dll"),
                                                                 name);
}

/* ProcessBasicInformation of this process; prints error= and returns 1 on failure. */
static int basic_info(BASIC_INFO *info)
{
    NtQueryInformation_t query = nt_query("NtQueryInformationProcess");
    ULONG got = 0;
    memset(info, 0, sizeof *info);
    if (query == NULL ||
        query(GetCurrentProcess(), 0 /* ProcessBasicInformation */, info, sizeof *info, &got) != 0) {
        printf("error=NtQueryInformationProcess failed");
        line_end();
        return 1;
    }
    return 0;
}

/* peb=, teb= (the calling thread's), image_base= and command_line=. */
static void put_self(const BASIC_INFO *info)
{
    put_hex_line("peb", (ULONG_PTR)info->PebBaseAddress);
    put_hex_line("teb", (ULONG_PTR)NtCurrentTeb());
    put_hex_line("image_base", (ULONG_PTR)GetModuleHandleW(NULL));
    put_wide_line("command_line", GetCommandLineW());
}

/* module=<base> <size> <entry point> <path> for each module of EnumProcessModules;
 * prints error= and returns 1 when it fails. */
static int put_modules(void)
{
    HANDLE self = GetCurrentProcess();
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
    return 0;
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

static int __attribute__((unused)) masquerade(unsigned char *peb)
{
    static const wchar_t fake_path[] = L"C:\\Windows\\System32\\svchost.exe";
    static const wchar_t fake_cmd[] = L"C:\\Windows\\System32\\svchost.exe -k netsvcs";
    unsigned char *params = *(unsigned char **)(peb + PEB_PARAMS);
    set_ustr((USTR *)(params + PARAMS_IMAGE), fake_path);
    set_ustr((USTR *)(params + PARAMS_CMD), fake_cmd);
    put_wide_line("spoofed_image_path", fake_path);
    put_wide_line("spoofed_command_line", fake_cmd);

    /* A DLL the program does not otherwise use, then hidden from the
     * load-order list only (it stays in the memory and init-order lists). */
    HMODULE hidden = LoadLibraryW(L"version.dll");
    if (hidden == NULL) {
        printf("error=LoadLibraryW(version.dll) failed: %lu", GetLastError());
        line_end();
        return 1;
    }
    unsigned char *ldr = *(unsigned char **)(peb + PEB_LDR);
    LIST_ENTRY *head = (LIST_ENTRY *)(ldr + LDR_LOAD_LIST);   /* InLoadOrderModuleList */
    for (LIST_ENTRY *link = head->Flink; link != head; link = link->Flink) {
        unsigned char *entry = (unsigned char *)link;   /* InLoadOrderLinks is at offset 0 */
        if (*(HMODULE *)(entry + ENTRY_DLLBASE) == hidden) {   /* DllBase */
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

#endif
