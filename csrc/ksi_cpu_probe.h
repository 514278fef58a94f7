/*
 * ksi_cpu_probe.h - run one privileged instruction at the caller's privilege
 * level and report what the processor did (Intel SDM vol. 3A §5.9,
 * "Privileged Instructions"; vol. 2 for each instruction's #GP conditions), and the
 * IOPL-sensitive CLI, STI, IN and OUT (vol. 1 §19.5: CPL <= IOPL, or for IN/OUT
 * the TSS's I/O permission bitmap).
 *
 * A live helper, like ksi_live.h: x86-64 Linux only (KSI_ERR_UNSUPPORTED
 * elsewhere). It replaces the SIGSEGV, SIGILL, SIGBUS, SIGTRAP and SIGFPE
 * handlers for the duration of the call (restored before it returns) and
 * keeps its jump buffer in static storage, so it is not thread-safe: call it
 * in a process of its own (ksinspect forks a child for each probe).
 */
#ifndef KSI_CPU_PROBE_H
#define KSI_CPU_PROBE_H

#include "ksi_common.h"

/* KSI-CDEF-BEGIN */
enum ksi_probe_instruction {
    KSI_PI_CLTS = 0,
    KSI_PI_HLT = 1,
    KSI_PI_INVD = 2,
    KSI_PI_WBINVD = 3,
    KSI_PI_INVLPG = 4,
    KSI_PI_LGDT = 5,
    KSI_PI_LIDT = 6,
    KSI_PI_LLDT = 7,
    KSI_PI_LMSW = 8,
    KSI_PI_LTR = 9,
    KSI_PI_MOV_TO_CR0 = 10,
    KSI_PI_MOV_FROM_CR0 = 11,
    KSI_PI_MOV_TO_CR3 = 12,
    KSI_PI_MOV_FROM_CR3 = 13,
    KSI_PI_MOV_TO_CR4 = 14,
    KSI_PI_MOV_FROM_CR4 = 15,
    KSI_PI_MOV_TO_DR7 = 16,
    KSI_PI_MOV_FROM_DR7 = 17,
    KSI_PI_RDMSR = 18,
    KSI_PI_WRMSR = 19,
    KSI_PI_RDPMC = 20,
    KSI_PI_RDTSC = 21,
    KSI_PI_SGDT = 22,
    KSI_PI_SIDT = 23,
    KSI_PI_SLDT = 24,
    KSI_PI_STR = 25,
    KSI_PI_SMSW = 26,
    KSI_PI_CLI = 27,
    KSI_PI_STI = 28,
    KSI_PI_IN = 29,
    KSI_PI_OUT = 30,
    KSI_PI_COUNT = 31
};

/* What one instruction did. */
typedef struct {
    uint64_t instruction;     /* enum ksi_probe_instruction */
    uint64_t faulted;         /* 1: a signal arrived instead of completion */
    uint64_t signal;          /* its number (SIGSEGV, SIGILL...) */
    uint64_t si_code;         /* siginfo's si_code (SI_KERNEL = 0x80 for #GP) */
    uint64_t trapno;          /* the vector the CPU raised (sigcontext trapno) */
    uint64_t error_code;      /* the error code it pushed (sigcontext err) */
    uint64_t value;           /* the result: RAX, or the base an SGDT/SIDT stored */
    uint64_t value_high;      /* RDX for RDTSC/RDMSR/RDPMC, the limit for SGDT/SIDT */
    uint64_t rflags;          /* RFLAGS just before the instruction (IOPL is bits 13:12) */
} ksi_cpu_probe;

/* The instruction's machine code as this core encodes it (for display). */
int ksi_cpu_probe_encoding(int instruction, uint8_t *out, size_t capacity, size_t *length);
/* Execute it once at the current privilege level. */
int ksi_cpu_probe_run(int instruction, ksi_cpu_probe *out);
/* KSI-CDEF-END */

#endif
