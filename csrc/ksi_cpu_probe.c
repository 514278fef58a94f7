/* ksi_cpu_probe.c - privileged instructions at CPL 3 (see ksi_cpu_probe.h). */
#define _GNU_SOURCE   /* REG_TRAPNO, REG_ERR */

#include "ksi_cpu_probe.h"

#include <string.h>

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(KSI_LIVE_DISABLE)
#define KSI_PROBE 1
#include <setjmp.h>
#include <signal.h>
#include <ucontext.h>
#else
#define KSI_PROBE 0
#endif

/* The encodings the inline assembly below produces (SDM vol. 2), with the
   operand registers the probe uses: a memory operand at [rdi], a register
   operand in di / ax. Shown to the user; the test compares them with what
   an assembler says. */
static const struct { uint8_t length; uint8_t bytes[4]; } encodings[KSI_PI_COUNT] = {
    [KSI_PI_CLTS] = {2, {0x0F, 0x06}},
    [KSI_PI_HLT] = {1, {0xF4}},
    [KSI_PI_INVD] = {2, {0x0F, 0x08}},
    [KSI_PI_WBINVD] = {2, {0x0F, 0x09}},
    [KSI_PI_INVLPG] = {3, {0x0F, 0x01, 0x3F}},        /* invlpg (%rdi) */
    [KSI_PI_LGDT] = {3, {0x0F, 0x01, 0x17}},          /* lgdt (%rdi) */
    [KSI_PI_LIDT] = {3, {0x0F, 0x01, 0x1F}},          /* lidt (%rdi) */
    [KSI_PI_LLDT] = {3, {0x0F, 0x00, 0xD7}},          /* lldt %di */
    [KSI_PI_LMSW] = {3, {0x0F, 0x01, 0xF7}},          /* lmsw %di */
    [KSI_PI_LTR] = {3, {0x0F, 0x00, 0xDF}},           /* ltr %di */
    [KSI_PI_MOV_TO_CR0] = {3, {0x0F, 0x22, 0xC0}},    /* mov %rax, %cr0 */
    [KSI_PI_MOV_FROM_CR0] = {3, {0x0F, 0x20, 0xC0}},  /* mov %cr0, %rax */
    [KSI_PI_MOV_TO_CR3] = {3, {0x0F, 0x22, 0xD8}},
    [KSI_PI_MOV_FROM_CR3] = {3, {0x0F, 0x20, 0xD8}},
    [KSI_PI_MOV_TO_CR4] = {3, {0x0F, 0x22, 0xE0}},
    [KSI_PI_MOV_FROM_CR4] = {3, {0x0F, 0x20, 0xE0}},
    [KSI_PI_MOV_TO_DR7] = {3, {0x0F, 0x23, 0xF8}},    /* mov %rax, %db7 */
    [KSI_PI_MOV_FROM_DR7] = {3, {0x0F, 0x21, 0xF8}},  /* mov %db7, %rax */
    [KSI_PI_RDMSR] = {2, {0x0F, 0x32}},
    [KSI_PI_WRMSR] = {2, {0x0F, 0x30}},
    [KSI_PI_RDPMC] = {2, {0x0F, 0x33}},
    [KSI_PI_RDTSC] = {2, {0x0F, 0x31}},
    [KSI_PI_SGDT] = {3, {0x0F, 0x01, 0x07}},          /* sgdt (%rdi) */
    [KSI_PI_SIDT] = {3, {0x0F, 0x01, 0x0F}},          /* sidt (%rdi) */
    [KSI_PI_SLDT] = {3, {0x0F, 0x00, 0xC0}},          /* sldt %eax */
    [KSI_PI_STR] = {3, {0x0F, 0x00, 0xC8}},           /* str %eax */
    [KSI_PI_SMSW] = {3, {0x0F, 0x01, 0xE0}},          /* smsw %eax */
    [KSI_PI_CLI] = {1, {0xFA}},
    [KSI_PI_STI] = {1, {0xFB}},
    [KSI_PI_IN] = {2, {0xE4, 0x80}},                  /* in $0x80, %al */
    [KSI_PI_OUT] = {2, {0xE6, 0x80}},                 /* out %al, $0x80 */
};

int ksi_cpu_probe_encoding(int instruction, uint8_t *out, size_t capacity, size_t *length)
{
    if (!out || !length)
        return KSI_ERR_NULL_POINTER;
    *length = 0;
    if (instruction < 0 || instruction >= KSI_PI_COUNT)
        return KSI_ERR_BAD_ARGUMENT;
    if (capacity < encodings[instruction].length)
        return KSI_ERR_CAPACITY;
    memcpy(out, encodings[instruction].bytes, encodings[instruction].length);
    *length = encodings[instruction].length;
    return KSI_OK;
}

#if KSI_PROBE

static sigjmp_buf probe_env;
static volatile uint64_t probe_signal, probe_code, probe_trapno, probe_err;
static const int probe_signals[] = {SIGSEGV, SIGILL, SIGBUS, SIGTRAP, SIGFPE};
#define PROBE_SIGNALS (sizeof probe_signals / sizeof probe_signals[0])

static void probe_handler(int sig, siginfo_t *info, void *context)
{
    const ucontext_t *uc = (const ucontext_t *)context;
    probe_signal = (uint64_t)sig;
    probe_code = (uint64_t)(int64_t)info->si_code;
    probe_trapno = (uint64_t)uc->uc_mcontext.gregs[REG_TRAPNO];
    probe_err = (uint64_t)uc->uc_mcontext.gregs[REG_ERR];
    siglongjmp(probe_env, 1);
}

/* Runs the instruction; the memory operand is buf (10 bytes used), register
   operands are 0. Each case is one instruction, so a fault points at it. */
static void execute(int which, uint8_t *buf, uint64_t *rax, uint64_t *rdx)
{
    uint64_t a = 0, d = 0, zero = 0;
    uint32_t lo = 0, hi = 0;
    switch (which) {
    case KSI_PI_CLTS: __asm__ volatile("clts"); break;
    case KSI_PI_HLT: __asm__ volatile("hlt"); break;
    case KSI_PI_INVD: __asm__ volatile("invd"); break;
    case KSI_PI_WBINVD: __asm__ volatile("wbinvd"); break;
    case KSI_PI_INVLPG: __asm__ volatile("invlpg (%0)" :: "D"(buf) : "memory"); break;
    case KSI_PI_LGDT: __asm__ volatile("lgdt (%0)" :: "D"(buf) : "memory"); break;
    case KSI_PI_LIDT: __asm__ volatile("lidt (%0)" :: "D"(buf) : "memory"); break;
    case KSI_PI_LLDT: __asm__ volatile("lldt %w0" :: "D"(zero)); break;
    case KSI_PI_LMSW: __asm__ volatile("lmsw %w0" :: "D"(zero)); break;
    case KSI_PI_LTR: __asm__ volatile("ltr %w0" :: "D"(zero)); break;
    case KSI_PI_MOV_TO_CR0: __asm__ volatile("mov %0, %%cr0" :: "a"(zero)); break;
    case KSI_PI_MOV_FROM_CR0: __asm__ volatile("mov %%cr0, %0" : "=a"(a)); break;
    case KSI_PI_MOV_TO_CR3: __asm__ volatile("mov %0, %%cr3" :: "a"(zero)); break;
    case KSI_PI_MOV_FROM_CR3: __asm__ volatile("mov %%cr3, %0" : "=a"(a)); break;
    case KSI_PI_MOV_TO_CR4: __asm__ volatile("mov %0, %%cr4" :: "a"(zero)); break;
    case KSI_PI_MOV_FROM_CR4: __asm__ volatile("mov %%cr4, %0" : "=a"(a)); break;
    case KSI_PI_MOV_TO_DR7: __asm__ volatile("mov %0, %%db7" :: "a"(zero)); break;
    case KSI_PI_MOV_FROM_DR7: __asm__ volatile("mov %%db7, %0" : "=a"(a)); break;
    case KSI_PI_RDMSR:      /* IA32_EFER */
        __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(0xC0000080u));
        a = lo; d = hi; break;
    case KSI_PI_WRMSR:      /* IA32_TIME_STAMP_COUNTER := 0 */
        __asm__ volatile("wrmsr" :: "a"(0u), "d"(0u), "c"(0x10u)); break;
    case KSI_PI_RDPMC:
        __asm__ volatile("rdpmc" : "=a"(lo), "=d"(hi) : "c"(0u));
        a = lo; d = hi; break;
    case KSI_PI_RDTSC:
        __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
        a = lo; d = hi; break;
    case KSI_PI_SGDT: __asm__ volatile("sgdt (%0)" :: "D"(buf) : "memory"); break;
    case KSI_PI_SIDT: __asm__ volatile("sidt (%0)" :: "D"(buf) : "memory"); break;
    case KSI_PI_SLDT: __asm__ volatile("sldt %k0" : "=a"(a) : "0"(zero)); break;
    case KSI_PI_STR: __asm__ volatile("str %k0" : "=a"(a) : "0"(zero)); break;
    case KSI_PI_SMSW: __asm__ volatile("smsw %k0" : "=a"(a) : "0"(zero)); break;
    case KSI_PI_CLI: __asm__ volatile("cli"); break;
    case KSI_PI_STI: __asm__ volatile("sti"); break;
    case KSI_PI_IN: __asm__ volatile("in $0x80, %%al" : "=a"(a) : "0"(zero)); break;
    case KSI_PI_OUT: __asm__ volatile("out %%al, $0x80" :: "a"(zero)); break;
    default: break;
    }
    *rax = a;
    *rdx = d;
}

int ksi_cpu_probe_run(int instruction, ksi_cpu_probe *out)
{
    struct sigaction action, saved[PROBE_SIGNALS];
    uint8_t buf[16];
    uint64_t rax = 0, rdx = 0;
    volatile int faulted = 0;

    if (!out)
        return KSI_ERR_NULL_POINTER;
    memset(out, 0, sizeof *out);
    if (instruction < 0 || instruction >= KSI_PI_COUNT)
        return KSI_ERR_BAD_ARGUMENT;
    memset(buf, 0, sizeof buf);
    memset(&action, 0, sizeof action);
    action.sa_sigaction = probe_handler;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    for (size_t i = 0; i < PROBE_SIGNALS; i++)
        sigaction(probe_signals[i], &action, &saved[i]);
    probe_signal = probe_code = probe_trapno = probe_err = 0;
    __asm__ volatile("pushfq; popq %0" : "=r"(out->rflags));
    if (sigsetjmp(probe_env, 1) == 0)
        execute(instruction, buf, &rax, &rdx);
    else
        faulted = 1;
    for (size_t i = 0; i < PROBE_SIGNALS; i++)
        sigaction(probe_signals[i], &saved[i], NULL);

    out->instruction = (uint64_t)instruction;
    out->faulted = (uint64_t)faulted;     /* rflags was filled before the run */
    if (faulted) {
        out->signal = probe_signal;
        out->si_code = probe_code;
        out->trapno = probe_trapno;
        out->error_code = probe_err;
    } else if (instruction == KSI_PI_SGDT || instruction == KSI_PI_SIDT) {
        uint16_t limit;
        uint64_t base;
        memcpy(&limit, buf, 2);
        memcpy(&base, buf + 2, 8);
        out->value = base;
        out->value_high = limit;
    } else {
        out->value = rax;
        out->value_high = rdx;
    }
    return KSI_OK;
}

#else

int ksi_cpu_probe_run(int instruction, ksi_cpu_probe *out)
{
    if (!out)
        return KSI_ERR_NULL_POINTER;
    memset(out, 0, sizeof *out);
    if (instruction < 0 || instruction >= KSI_PI_COUNT)
        return KSI_ERR_BAD_ARGUMENT;
    return KSI_ERR_UNSUPPORTED;
}

#endif
