/* The Win32 debugger's test program (mingw-w64, x64 or i686). It prints what
   Windows tells it about itself, then its own view of every event it causes,
   so each debug event can be checked against it:

     win_calls N PAUSE_MS [thread] [dll] [ods] [read] [wait] [exit=K]

   calls bump() N times, each time writing the global `counter` (printed as
   "write I VALUE") and one byte of the page-aligned `page` at (i*67)%4096;
   `read` also reads page[100] first and writes page[108] (guard tests);
   `thread` then starts a second thread that writes `counter` once and prints
   its thread id; `dll` loads version.dll with LoadLibrary and prints its
   base; `ods` sends two OutputDebugString texts (ANSI and Unicode); `wait`
   prints "ready" and sleeps PAUSE_MS between calls from the start (attach
   tests). Exits with K (default 0) after printing a checksum that is only
   right if every call ran correctly. */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

volatile unsigned int counter = 7;
__attribute__((aligned(4096))) unsigned char page[4096];

__attribute__((noinline)) unsigned long bump(unsigned long x)
{
    return x * 31 + 7;
}

static DWORD WINAPI worker(LPVOID arg)
{
    unsigned int value = counter * 10 + (unsigned int)(UINT_PTR)arg;
    counter = value;
    printf("thread %lu wrote %u\n", (unsigned long)GetCurrentThreadId(), value);
    return 0;
}

static int has(int argc, char **argv, const char *flag)
{
    for (int i = 3; i < argc; i++)
        if (!strcmp(argv[i], flag))
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 3;
    int pause_ms = argc > 2 ? atoi(argv[2]) : 0;
    int code = 0;
    unsigned long sum = 1, bytes = 0;
    setvbuf(stdout, NULL, _IONBF, 0);
    for (int i = 3; i < argc; i++)
        if (!strncmp(argv[i], "exit=", 5))
            code = atoi(argv[i] + 5);
    printf("pid %lu\n", (unsigned long)GetCurrentProcessId());
    printf("tid %lu\n", (unsigned long)GetCurrentThreadId());
    printf("image-base %p\n", (void *)GetModuleHandleW(NULL));
    printf("bump-address %p\n", (void *)bump);
    printf("counter-address %p\n", (void *)&counter);
    printf("counter-initial %u\n", counter);
    printf("page-address %p\n", (void *)page);
    printf("sleep-address %p\n", (void *)GetProcAddress(GetModuleHandleW(L"kernel32.dll"),
                                                         "Sleep"));
    if (has(argc, argv, "wait"))
        printf("ready\n");
    if (has(argc, argv, "read")) {
        volatile unsigned char *p = page;
        printf("read-address %p\n", (void *)(page + 100));
        unsigned char r = p[100];
        printf("write-address %p\n", (void *)(page + 108));
        p[108] = (unsigned char)(r + 42);
        printf("value %u\n", page[108]);
    }
    if (has(argc, argv, "ods")) {
        OutputDebugStringA("ksinspect ansi text");
        OutputDebugStringW(L"ksinspect unicode \x00e9t\x00e9");
        printf("ods 2\n");
    }
    if (has(argc, argv, "dll")) {
        HMODULE dll = LoadLibraryW(L"version.dll");
        printf("dll version.dll %p\n", (void *)dll);
        FreeLibrary(dll);
    }
    for (int i = 0; i < n; i++) {
        sum = bump(sum) % 1000003;
        unsigned int value = counter * 3 + (unsigned int)i;
        counter = value;
        printf("write %d %u\n", i, value);
        ((volatile unsigned char *)page)[(i * 67) % 4096] = (unsigned char)(i + 1);
        if (pause_ms)
            Sleep(pause_ms);
    }
    if (has(argc, argv, "thread")) {
        HANDLE t = CreateThread(NULL, 0, worker, (LPVOID)(UINT_PTR)1, 0, NULL);
        WaitForSingleObject(t, INFINITE);
        CloseHandle(t);
    }
    for (int i = 0; i < 4096; i++)
        bytes += page[i];
    printf("calls %d\n", n);
    printf("counter %u\n", counter);
    printf("checksum %lu %lu\n", sum, bytes);
    return code;
}
