/*
 * ksi_control.h - control registers, flags and the page-fault error code.
 *
 * CR0 and CR4: Intel SDM vol. 3A §2.5, Figure 2-7; IA32_EFER: §2.2.1 and
 * AMD APM vol. 2 §3.1.7 (the bits AMD alone defines); RFLAGS / EFLAGS:
 * SDM vol. 1 §3.4.3, Figure 3-8 and vol. 3A §2.3; the page-fault error code:
 * vol. 3A §4.7, Figure 4-12. The operating mode (real-address, protected,
 * virtual-8086, IA-32e compatibility or 64-bit) is chosen by CR0.PE,
 * EFLAGS.VM, IA32_EFER.LMA and CS.L: vol. 3A §2.2, Figure 2-3.
 */
#ifndef KSI_CONTROL_H
#define KSI_CONTROL_H

#include "ksi_common.h"

/* KSI-CDEF-BEGIN */
enum ksi_control_register {
    KSI_REG_CR0 = 0,
    KSI_REG_CR4 = 1,
    KSI_REG_EFER = 2,
    KSI_REG_RFLAGS = 3,
    KSI_REG_PF_ERROR = 4
};

/* Facts about one value on its own (ksi_control.anomalies). */
enum ksi_control_anomaly {
    KSI_CA_RESERVED_BITS = 1,     /* a reserved bit differs from its required value */
    KSI_CA_PG_WITHOUT_PE = 2,     /* CR0.PG=1, PE=0: MOV to CR0 raises #GP (§2.5) */
    KSI_CA_NW_WITHOUT_CD = 4,     /* CR0.NW=1, CD=0: MOV to CR0 raises #GP (§2.5) */
    KSI_CA_LMA_WITHOUT_LME = 8,   /* EFER.LMA=1, LME=0: the CPU sets LMA only from LME */
    KSI_CA_RSVD_NOT_PRESENT = 16, /* #PF error code: RSVD=1 with P=0 (§4.7: only P=1) */
    KSI_CA_FETCH_WRITE = 32,      /* #PF error code: I/D=1 with W/R=1 */
    KSI_CA_PK_NOT_PRESENT = 64    /* #PF error code: PK=1 with P=0 */
};

enum ksi_cpu_mode {
    KSI_CPU_REAL = 0,            /* CR0.PE=0 */
    KSI_CPU_PROTECTED = 1,       /* CR0.PE=1, EFLAGS.VM=0, not IA-32e */
    KSI_CPU_VIRTUAL_8086 = 2,    /* CR0.PE=1, EFLAGS.VM=1, not IA-32e */
    KSI_CPU_COMPATIBILITY = 3,   /* IA32_EFER.LMA=1, CS.L=0 */
    KSI_CPU_64BIT = 4            /* IA32_EFER.LMA=1, CS.L=1 */
};

/* Combinations of registers the processor refuses or ignores (ksi_cpu_state). */
enum ksi_state_anomaly {
    KSI_SA_LMA_WITHOUT_PG = 1,     /* EFER.LMA=1 but CR0.PG=0 */
    KSI_SA_LMA_WITHOUT_PAE = 2,    /* IA-32e mode needs CR4.PAE=1 (#GP on MOV to CR4) */
    KSI_SA_LME_PG_WITHOUT_LMA = 4, /* LME=1 and PG=1 make LMA=1: LMA=0 is inconsistent */
    KSI_SA_PCIDE_OUTSIDE_IA32E = 8,/* CR4.PCIDE=1 can only be set in IA-32e mode */
    KSI_SA_CET_WITHOUT_WP = 16,    /* CR4.CET=1 needs CR0.WP=1 */
    KSI_SA_VM_IN_IA32E = 32,       /* EFLAGS.VM is ignored in IA-32e mode */
    KSI_SA_PG_WITHOUT_PE = 64,     /* CR0.PG=1 with PE=0 */
    KSI_SA_LMA_WITHOUT_LME = 128   /* EFER.LMA=1 with LME=0 */
};

typedef struct {
    uint64_t raw;
    uint64_t kind;            /* enum ksi_control_register */
    uint64_t defined;         /* the bits this register defines (flags and fields) */
    uint64_t flags;           /* raw & defined */
    uint64_t reserved_bits;   /* reserved bits that differ from their required value */
    uint64_t anomalies;       /* enum ksi_control_anomaly bits */
    uint64_t iopl;            /* RFLAGS bits 13:12; 0 for the other registers */
} ksi_control;

typedef struct {
    uint64_t mode;            /* enum ksi_cpu_mode */
    uint64_t paging;          /* 0: paging off; else 1 + enum ksi_paging_mode */
    uint64_t address_bits;    /* linear-address width in force: 16, 32, 48 or 57 */
    uint64_t anomalies;       /* enum ksi_state_anomaly bits */
} ksi_cpu_state;

/* The bits a register defines and those that must read as 1 (RFLAGS bit 1). */
int ksi_control_layout(int kind, uint64_t *defined, uint64_t *must_be_one);
int ksi_decode_control(int kind, uint64_t value, ksi_control *out);
int ksi_decode_control_batch(int kind, const uint64_t *values, size_t count, ksi_control *out);
/* The operating and paging modes these registers select, with their conflicts. */
int ksi_cpu_operating_mode(uint64_t cr0, uint64_t cr4, uint64_t efer, uint64_t rflags,
                           uint64_t cs_long, ksi_cpu_state *out);
/* KSI-CDEF-END */

#endif
