/* Segmentation checked by the CPU: writes LDT entries with modify_ldt(2),
   then, for each case, switches to compatibility mode (a far return to
   __USER32_CS = 0x23), loads the selector into DS and makes one access at an
   offset, then far-jumps back to 64-bit mode. A fault arrives as a signal
   (on an alternate stack, because compatibility mode uses only ESP) whose
   context gives trapno and the error code. One line per case:

   entry INDEX RAW            (the 8-byte descriptor as the kernel stored it)
   case NAME sel S offset O kind K -> ok | signo S code C trapno T err E

   kind: 0 = write 1 byte, 1 = read 1 byte, 2 = read 2 bytes.
   Build: gcc -O1 -no-pie -fno-pie -o ldt_access ldt_access.c (x86-64 Linux). */
#define _GNU_SOURCE
#include <asm/ldt.h>
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

unsigned long saved_rsp;
extern void compat_access(unsigned long selector, unsigned long offset, unsigned long kind);

__asm__(
    ".text\n"
    ".globl compat_access\n"
    ".code64\n"
    "compat_access:\n"
    "    push %rbx\n"
    "    push %rbp\n"
    "    mov %rsp, saved_rsp(%rip)\n"
    "    mov %edi, %ecx\n"
    "    mov %esi, %ebx\n"
    "    pushq $0x23\n"
    "    lea compat32(%rip), %rax\n"
    "    push %rax\n"
    "    lretq\n"
    ".code32\n"
    "compat32:\n"
    "    mov %cx, %ds\n"
    "    cmp $1, %edx\n"
    "    je 1f\n"
    "    cmp $2, %edx\n"
    "    je 2f\n"
    "    movb $0x5a, (%ebx)\n"
    "    jmp 3f\n"
    "1:  movb (%ebx), %al\n"
    "    jmp 3f\n"
    "2:  movw (%ebx), %ax\n"
    "3:  mov $0x2b, %ecx\n"
    "    mov %cx, %ds\n"
    "    ljmp *back_pointer\n"
    ".code64\n"
    "back64:\n"
    "    mov saved_rsp(%rip), %rsp\n"
    "    pop %rbp\n"
    "    pop %rbx\n"
    "    ret\n"
    ".data\n"
    "back_pointer:\n"
    "    .long back64\n"
    "    .word 0x33\n"
    ".text\n");

static void write_entry(unsigned n, unsigned base, unsigned limit, int seg32, int contents,
                        int read_exec_only, int not_present)
{
    struct user_desc d;
    memset(&d, 0, sizeof d);
    d.entry_number = n;
    d.base_addr = base;
    d.limit = limit;
    d.seg_32bit = seg32;
    d.contents = contents;
    d.read_exec_only = read_exec_only;
    d.limit_in_pages = 0;
    d.seg_not_present = not_present;
    d.useable = 1;
    if (syscall(SYS_modify_ldt, 0x11, &d, sizeof d) != 0) {
        perror("modify_ldt");
        exit(2);
    }
}

static void attempt(const char *name, unsigned sel, unsigned long offset, int kind)
{
    printf("case %s sel %#x offset %#lx kind %d -> ", name, sel, offset, kind);
    fflush(stdout);
    forget_fault();
    if (sigsetjmp(fault_env, 1) == 0) {
        compat_access(sel, offset, (unsigned long)kind);
        printf("ok\n");
    } else {
        __asm__ volatile("mov %0, %%ds" :: "r"(0x2b));
        printf("signo %ld code %ld trapno %ld err %#lx\n", got_signo, got_code, got_trapno,
               (unsigned long)got_err);
    }
    fflush(stdout);
}

int main(void)
{
    static uint8_t altstack[65536];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
    uint8_t raw[8 * 8];
    uint8_t *buf = mmap(NULL, 0x20000, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
    unsigned base;

    if (buf == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    memset(buf, 0x11, 0x20000);
    base = (unsigned)(uintptr_t)buf;
    sigaltstack(&ss, NULL);
    catch_faults(SA_ONSTACK);

    write_entry(0, base, 0xFF, 1, 0, 1, 0);        /* read-only data, limit 0xff */
    write_entry(1, base, 0x0FFF, 0, 1, 0, 0);      /* expand-down data, B=0, limit 0xfff */
    write_entry(2, base, 0xFFFF, 1, 2, 1, 0);      /* execute-only code */
    write_entry(3, base, 0xFF, 1, 0, 0, 0);        /* read/write data, limit 0xff */
    write_entry(4, base, 0xFF, 1, 0, 0, 1);        /* not present */
    write_entry(5, base, 0xFFFF, 1, 2, 0, 0);      /* readable code */
    memset(raw, 0, sizeof raw);
    if (syscall(SYS_modify_ldt, 0, raw, sizeof raw) < 0) {
        perror("modify_ldt read");
        return 2;
    }
    for (int i = 0; i < 6; i++) {
        uint64_t q;
        memcpy(&q, raw + 8 * i, 8);
        printf("entry %d %#llx\n", i, (unsigned long long)q);
    }

    attempt("ro_read_inside", 0x07, 0x10, 1);
    attempt("ro_write", 0x07, 0x10, 0);
    attempt("ro_read_at_limit", 0x07, 0xFF, 1);
    attempt("ro_read_past_limit", 0x07, 0x100, 1);
    attempt("ro_read2_across_limit", 0x07, 0xFF, 2);
    attempt("rw_write_inside", 0x1F, 0xFE, 0);
    attempt("rw_read2_at_end", 0x1F, 0xFE, 2);
    attempt("rw_write_past_limit", 0x1F, 0x100, 0);
    attempt("down_at_limit", 0x0F, 0xFFF, 1);
    attempt("down_just_above", 0x0F, 0x1000, 1);
    attempt("down_top", 0x0F, 0xFFFF, 1);
    attempt("down_past_top", 0x0F, 0x10000, 1);
    attempt("down_read2_at_top", 0x0F, 0xFFFF, 2);
    attempt("xo_load", 0x17, 0x0, 1);
    attempt("not_present_load", 0x27, 0x0, 1);
    attempt("code_readable_read", 0x2F, 0x10, 1);
    attempt("code_readable_write", 0x2F, 0x10, 0);
    attempt("rpl0_selector", 0x1C, 0x10, 1);
    attempt("kernel_ds_dpl0", 0x18, 0x10, 1);
    attempt("null_selector_use", 0x0, 0x10, 1);
    return 0;
}
