/* Makes user-mode accesses that fault on purpose and reports, for each, what
   the CPU put in the signal context: the vector (trapno), the error code and
   CR2, with si_signo / si_code. Before each access it prints the mapping's
   /proc/self/maps permissions and the page's present bit (/proc/self/pagemap
   bit 63), the rights Linux gave the page, so a simulator can be given the
   same facts. One line per case:

   case NAME access KIND addr A size N perms P present B last_perms P2 last_present B2
        -> signo S code C trapno T err E cr2 X
   case NAME ... -> ok            (the access completed)
   case NAME unsupported REASON

   Build: gcc -O1 -o faults faults.c (x86-64 Linux). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include "fault_catch.h"

static void perms_of(uintptr_t addr, char *out)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    strcpy(out, "----");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char p[8];
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, p) == 3 && addr >= lo && addr < hi) {
            memcpy(out, p, 4);
            out[4] = 0;
            break;
        }
    }
    fclose(f);
}

static int present_of(uintptr_t addr)
{
    uint64_t entry = 0;
    int fd = open("/proc/self/pagemap", O_RDONLY);
    if (fd < 0)
        return -1;
    if (pread(fd, &entry, 8, (off_t)(addr / 4096) * 8) != 8) {
        close(fd);
        return -1;
    }
    close(fd);
    return (int)(entry >> 63);
}

typedef void (*fn)(void);

static void attempt(const char *name, const char *kind, uintptr_t addr, int size)
{
    char perms[8], last_perms[8];
    uintptr_t last = addr + (uintptr_t)size - 1;
    volatile uint64_t sink;
    perms_of(addr, perms);
    perms_of(last, last_perms);
    printf("case %s access %s addr %#lx size %d perms %s present %d last_perms %s "
           "last_present %d -> ", name, kind, (unsigned long)addr, size, perms,
           present_of(addr), last_perms, present_of(last));
    fflush(stdout);
    forget_fault();
    if (sigsetjmp(fault_env, 1) == 0) {
        if (!strcmp(kind, "read")) {
            if (size == 8)
                sink = *(volatile uint64_t *)addr;
            else
                sink = *(volatile uint8_t *)addr;
            (void)sink;
        } else if (!strcmp(kind, "write")) {
            *(volatile uint8_t *)addr = 0x5A;
        } else {
            ((fn)addr)();
        }
        printf("ok\n");
    } else {
        printf("signo %ld code %ld trapno %ld err %#lx cr2 %#lx\n", got_signo, got_code,
               got_trapno, (unsigned long)got_err, got_cr2);
    }
    fflush(stdout);
}

static uint8_t *map(int prot)
{
    void *p = mmap(NULL, 2 * 4096, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    return p;
}

int main(void)
{
    uint8_t *p;

    catch_faults(0);

    p = map(PROT_NONE);
    attempt("prot_none_read", "read", (uintptr_t)p, 1);
    attempt("prot_none_write", "write", (uintptr_t)p, 1);
    attempt("prot_none_exec", "execute", (uintptr_t)p, 1);

    p = map(PROT_READ | PROT_WRITE);
    p[0] = 1;
    mprotect(p, 4096, PROT_NONE);
    attempt("prot_none_touched_read", "read", (uintptr_t)p, 1);

    p = map(PROT_READ | PROT_WRITE);
    p[0] = 1;
    mprotect(p, 4096, PROT_READ);
    attempt("ro_touched_write", "write", (uintptr_t)p, 1);
    attempt("ro_touched_read", "read", (uintptr_t)p, 1);

    p = map(PROT_READ);
    attempt("ro_untouched_write", "write", (uintptr_t)p, 1);

    p = map(PROT_READ | PROT_WRITE);
    p[0] = 0xC3;     /* ret */
    attempt("nx_touched_exec", "execute", (uintptr_t)p, 1);
    attempt("nx_untouched_exec", "execute", (uintptr_t)(p + 4096), 1);

    attempt("text_write", "write", (uintptr_t)&main, 1);

    p = map(PROT_READ | PROT_WRITE);
    p[4095] = 1;
    mprotect(p + 4096, 4096, PROT_NONE);
    attempt("cross_page_read", "read", (uintptr_t)(p + 4092), 8);

    attempt("kernel_read", "read", 0xffffffff81000000UL, 1);
    attempt("kernel_write", "write", 0xffffffff81000000UL, 1);
    attempt("kernel_exec", "execute", 0xffffffff81000000UL, 1);
    attempt("noncanonical_read", "read", 0x0000800000000000UL, 1);
    attempt("noncanonical_write", "write", 0x8000000000000000UL, 1);

#ifdef SYS_pkey_alloc
    {
        long key = syscall(SYS_pkey_alloc, 0, 0);
        if (key < 0) {
            printf("case pkey_write unsupported pkey_alloc: %s\n", strerror(errno));
        } else {
            p = map(PROT_READ | PROT_WRITE);
            p[0] = 1;
            syscall(SYS_pkey_mprotect, p, 4096, PROT_READ | PROT_WRITE, key);
            /* PKRU: WD for this key (bit 2k+1) via WRPKRU (ECX = EDX = 0). */
            unsigned int pkru = 2u << (2 * key);
            __asm__ volatile(".byte 0x0f, 0x01, 0xef" :: "a"(pkru), "c"(0), "d"(0));
            printf("pkey %ld pkru %#x\n", key, pkru);
            attempt("pkey_write", "write", (uintptr_t)p, 1);
            attempt("pkey_read", "read", (uintptr_t)p, 1);
        }
    }
#else
    printf("case pkey_write unsupported no SYS_pkey_alloc\n");
#endif
    return 0;
}
