/* Offsets and sizes of the Windows structures the Win32 debugger reads as
   bytes, as mingw-w64's headers lay them out (x64): one "name value" a line. */
#include <windows.h>
#include <tlhelp32.h>
#include <stdio.h>
#include <stddef.h>

#define P(name, value) printf("%s %lu\n", name, (unsigned long)(value))

int main(void)
{
    P("DEBUG_EVENT", sizeof(DEBUG_EVENT));
    P("DEBUG_EVENT.u", offsetof(DEBUG_EVENT, u));
    P("EXCEPTION_RECORD.ExceptionAddress", offsetof(EXCEPTION_RECORD, ExceptionAddress));
    P("EXCEPTION_RECORD.NumberParameters", offsetof(EXCEPTION_RECORD, NumberParameters));
    P("EXCEPTION_RECORD.ExceptionInformation", offsetof(EXCEPTION_RECORD, ExceptionInformation));
    P("EXCEPTION_DEBUG_INFO.dwFirstChance", offsetof(EXCEPTION_DEBUG_INFO, dwFirstChance));
    P("CREATE_PROCESS_DEBUG_INFO.lpBaseOfImage", offsetof(CREATE_PROCESS_DEBUG_INFO, lpBaseOfImage));
    P("CREATE_PROCESS_DEBUG_INFO.lpThreadLocalBase", offsetof(CREATE_PROCESS_DEBUG_INFO, lpThreadLocalBase));
    P("CREATE_PROCESS_DEBUG_INFO.lpStartAddress", offsetof(CREATE_PROCESS_DEBUG_INFO, lpStartAddress));
    P("CREATE_PROCESS_DEBUG_INFO.lpImageName", offsetof(CREATE_PROCESS_DEBUG_INFO, lpImageName));
    P("CREATE_PROCESS_DEBUG_INFO.fUnicode", offsetof(CREATE_PROCESS_DEBUG_INFO, fUnicode));
    P("CREATE_THREAD_DEBUG_INFO.lpStartAddress", offsetof(CREATE_THREAD_DEBUG_INFO, lpStartAddress));
    P("LOAD_DLL_DEBUG_INFO.lpBaseOfDll", offsetof(LOAD_DLL_DEBUG_INFO, lpBaseOfDll));
    P("LOAD_DLL_DEBUG_INFO.lpImageName", offsetof(LOAD_DLL_DEBUG_INFO, lpImageName));
    P("LOAD_DLL_DEBUG_INFO.fUnicode", offsetof(LOAD_DLL_DEBUG_INFO, fUnicode));
    P("OUTPUT_DEBUG_STRING_INFO.fUnicode", offsetof(OUTPUT_DEBUG_STRING_INFO, fUnicode));
    P("OUTPUT_DEBUG_STRING_INFO.nDebugStringLength", offsetof(OUTPUT_DEBUG_STRING_INFO, nDebugStringLength));
    P("RIP_INFO.dwType", offsetof(RIP_INFO, dwType));
    P("MEMORY_BASIC_INFORMATION", sizeof(MEMORY_BASIC_INFORMATION));
    P("MEMORY_BASIC_INFORMATION.RegionSize", offsetof(MEMORY_BASIC_INFORMATION, RegionSize));
    P("MEMORY_BASIC_INFORMATION.State", offsetof(MEMORY_BASIC_INFORMATION, State));
    P("MEMORY_BASIC_INFORMATION.Protect", offsetof(MEMORY_BASIC_INFORMATION, Protect));
    P("MEMORY_BASIC_INFORMATION.Type", offsetof(MEMORY_BASIC_INFORMATION, Type));
    P("THREADENTRY32", sizeof(THREADENTRY32));
    P("THREADENTRY32.th32ThreadID", offsetof(THREADENTRY32, th32ThreadID));
    P("MODULEENTRY32W", sizeof(MODULEENTRY32W));
    P("MODULEENTRY32W.modBaseAddr", offsetof(MODULEENTRY32W, modBaseAddr));
    P("MODULEENTRY32W.szModule", offsetof(MODULEENTRY32W, szModule));
    P("MODULEENTRY32W.szExePath", offsetof(MODULEENTRY32W, szExePath));
    P("STARTUPINFOW", sizeof(STARTUPINFOW));
    P("STARTUPINFOW.dwFlags", offsetof(STARTUPINFOW, dwFlags));
    P("STARTUPINFOW.hStdInput", offsetof(STARTUPINFOW, hStdInput));
    P("PROCESS_INFORMATION", sizeof(PROCESS_INFORMATION));
    P("SYSTEM_INFO.dwPageSize", offsetof(SYSTEM_INFO, dwPageSize));
    P("PAGE_GUARD", PAGE_GUARD);
    P("DBG_CONTINUE", DBG_CONTINUE);
    P("DBG_EXCEPTION_NOT_HANDLED", DBG_EXCEPTION_NOT_HANDLED);
    P("STATUS_GUARD_PAGE_VIOLATION", STATUS_GUARD_PAGE_VIOLATION);
    P("EXCEPTION_SINGLE_STEP", EXCEPTION_SINGLE_STEP);
    P("EXCEPTION_BREAKPOINT", EXCEPTION_BREAKPOINT);
    P("EXCEPTION_ACCESS_VIOLATION", EXCEPTION_ACCESS_VIOLATION);
    SYSTEM_INFO si;
    GetSystemInfo(&si);
    P("page-size", si.dwPageSize);
    return 0;
}
