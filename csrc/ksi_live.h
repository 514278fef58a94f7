/*
 * ksi_live.h - helpers that look at the machine the core runs on.
 *
 * Unlike the rest of the core these functions execute x86 instructions
 * (MOV from/to segment registers, LAR, LSL, SGDT, SIDT, SLDT, STR) and, on
 * Linux, make system calls (arch_prctl, modify_ldt). They are compiled only
 * on x86 (i386 or x86-64) with a GNU-compatible compiler; elsewhere every
 * function returns KSI_ERR_UNSUPPORTED (ksi_live_supported() returns 0) and
 * the file still builds. Linux-only calls also return KSI_ERR_UNSUPPORTED on
 * other x86 systems.
 *
 * No function here can fault on bad input: selectors are checked with LAR
 * before they are loaded into a segment register. The exceptions are the
 * "store table register" functions (SGDT, SIDT, SLDT, STR), which raise
 * #GP - SIGSEGV - in user mode when the OS enables UMIP (CR4.UMIP, SDM
 * vol. 3A 2.5) and does not emulate them; callers must run those in a child
 * process.
 *
 * Sources: Intel SDM vol. 2A "LAR", vol. 2A/2B "LSL", "MOV", "SGDT",
 * "SIDT", "SLDT", "STR"; vol. 3A 3.4.2 (selectors), 3.4.5 (descriptors);
 * Linux modify_ldt(2), arch_prctl(2).
 */
#ifndef KSI_LIVE_H
#define KSI_LIVE_H

#include "ksi_common.h"

/* KSI-CDEF-BEGIN */
/* Bits returned by ksi_live_features(). */
enum ksi_live_feature {
    KSI_LF_X86 = 1,        /* the segment-register, LAR and LSL helpers work */
    KSI_LF_X86_64 = 2,     /* the core runs in 64-bit mode */
    KSI_LF_LINUX = 4       /* arch_prctl / modify_ldt helpers are compiled in */
};

/* The LAR access-rights mask: the bits of the descriptor's second dword
   that LAR reports (SDM vol. 2A "LAR": type, S, DPL, P in 15:8; AVL, L,
   D/B, G in 23:20). Bits 19:16 are undefined and cleared by this core. */
enum ksi_live_constants {
    KSI_LIVE_LAR_MASK = 0x00F0FF00,
    KSI_LIVE_LDT_ENTRIES = 8192,   /* LDT_ENTRIES in <asm/ldt.h> */
    KSI_LIVE_LDT_ENTRY_SIZE = 8    /* LDT_ENTRY_SIZE in <asm/ldt.h> */
};

/* The six segment registers as the process sees them (16-bit selectors). */
typedef struct {
    uint64_t cs;
    uint64_t ds;
    uint64_t es;
    uint64_t fs;
    uint64_t gs;
    uint64_t ss;
} ksi_live_sregs;

/* LAR and LSL on one selector; valid_* is the ZF the instruction set. */
typedef struct {
    uint64_t selector;
    uint64_t ar_valid;
    uint64_t access_rights;    /* masked with KSI_LIVE_LAR_MASK; 0 when not valid */
    uint64_t limit_valid;
    uint64_t limit;            /* byte-granular limit; 0 when not valid */
} ksi_live_probe;

/* Result of ksi_live_load_es: the selector loaded, read back, and what the
   CPU says about the segment while it is in ES; then ES is restored. */
typedef struct {
    uint64_t previous;         /* ES before the load */
    uint64_t loaded;           /* ES read back after the load */
    uint64_t ar_valid;
    uint64_t access_rights;    /* LAR on the selector read back from ES */
    uint64_t limit_valid;
    uint64_t limit;            /* LSL on the selector read back from ES */
    uint64_t restored;         /* ES after restoring, equal to previous */
} ksi_live_es_load;

/* One LDT entry as struct user_desc of <asm/ldt.h> describes it
   (modify_ldt(2)); every field is a plain number here. */
typedef struct {
    uint64_t entry_number;     /* 0 .. 8191 */
    uint64_t base_addr;        /* 32 bits */
    uint64_t limit;            /* 20 bits */
    uint64_t seg_32bit;        /* 0 or 1: D/B */
    uint64_t contents;         /* 0 data, 1 data expand-down, 2 code, 3 conforming code */
    uint64_t read_exec_only;   /* 0 or 1: clears W (data) or R (code) */
    uint64_t limit_in_pages;   /* 0 or 1: G */
    uint64_t seg_not_present;  /* 0 or 1: clears P */
    uint64_t useable;          /* 0 or 1: AVL */
    uint64_t lm;               /* 0 or 1: ignored by Linux, which keeps L = 0 */
} ksi_live_ldt_request;

/* A descriptor-table register: base and limit (SGDT / SIDT). */
typedef struct {
    uint64_t base;
    uint64_t limit;
} ksi_live_table_register;

/* 1 where the x86 helpers work (x86 with GCC-style inline asm), else 0. */
int ksi_live_supported(void);
/* enum ksi_live_feature bits describing this build. */
uint64_t ksi_live_features(void);

/* Read CS, DS, ES, FS, GS and SS. */
int ksi_live_read_sregs(ksi_live_sregs *out);

/* FS and GS base of the calling thread (arch_prctl ARCH_GET_FS / ARCH_GET_GS).
   x86-64 Linux only; KSI_ERR_UNSUPPORTED elsewhere (i386 included). On a
   failed system call *os_errno holds errno (0 otherwise). */
int ksi_live_fs_gs_base(uint64_t *fs_base, uint64_t *gs_base, uint64_t *os_errno);

/* LAR: *valid = ZF; *access_rights = the masked result (0 when not valid).
   Selectors wider than 16 bits give KSI_ERR_OUT_OF_RANGE. */
int ksi_live_lar(uint64_t selector, uint64_t *access_rights, uint64_t *valid);
/* LSL: *valid = ZF; *limit = the byte-granular limit (0 when not valid). */
int ksi_live_lsl(uint64_t selector, uint64_t *limit, uint64_t *valid);
/* LAR and LSL on count selectors (one call for a whole GDT probe). */
int ksi_live_probe_selectors(const uint64_t *selectors, size_t count, ksi_live_probe *out);

/* Load selector into ES, read it back, run LAR/LSL on the value read back,
   and restore the previous ES, all in one asm block. The selector is first
   checked with LAR as MOV ES would check it (SDM vol. 2B "MOV": present,
   data or readable code, DPL >= max(CPL, RPL) unless conforming code;
   the null selector is always allowed); a selector that would fault is
   refused with KSI_ERR_BAD_ARGUMENT and ES is not touched. */
int ksi_live_load_es(uint64_t selector, ksi_live_es_load *out);

/* modify_ldt(0): copy this process's LDT into buf (at most len bytes);
   *nread = bytes copied (0 when the process has no LDT). Linux x86 only. */
int ksi_live_read_ldt(uint8_t *buf, size_t len, size_t *nread, uint64_t *os_errno);
/* modify_ldt(0x11): write one LDT entry. Field ranges are checked first
   (KSI_ERR_OUT_OF_RANGE). A failed call returns KSI_ERR_UNSUPPORTED for
   ENOSYS (kernel without CONFIG_MODIFY_LDT_SYSCALL) or KSI_ERR_BAD_ARGUMENT
   otherwise, with errno in *os_errno. Linux x86 only. */
int ksi_live_write_ldt(const ksi_live_ldt_request *request, uint64_t *os_errno);

/* SGDT / SIDT / SLDT / STR. Under UMIP these fault (SIGSEGV) or, on Linux,
   are emulated with dummy values (arch/x86/kernel/umip.c): run them only
   in a child process. */
int ksi_live_sgdt(ksi_live_table_register *out);
int ksi_live_sidt(ksi_live_table_register *out);
int ksi_live_sldt(uint64_t *selector);
int ksi_live_str(uint64_t *selector);
/* KSI-CDEF-END */

#endif
