/*
 * ksi_debugreg.h - the debug registers DR6 and DR7 (Intel SDM vol. 3B
 * 17.2.3 for DR6, 17.2.4 for DR7, 17.2.5 for breakpoint alignment).
 */
#ifndef KSI_DEBUGREG_H
#define KSI_DEBUGREG_H

#include "ksi_common.h"

/* KSI-CDEF-BEGIN */
/* R/Wn encodings. */
enum ksi_dr_condition {
    KSI_DR_EXECUTE = 0,
    KSI_DR_WRITE = 1,
    KSI_DR_IO = 2,
    KSI_DR_READWRITE = 3
};

/* Scope of one breakpoint: Ln, Gn or both. */
enum ksi_dr_scope {
    KSI_DR_LOCAL = 1,
    KSI_DR_GLOBAL = 2
};

/* Options of ksi_decode_dr7 and ksi_encode_dr7. */
enum ksi_dr_option {
    KSI_DO_LONG_MODE = 1,  /* 64-bit mode: LEN=10 means 8 bytes */
    KSI_DO_CR4_DE = 2,     /* CR4.DE=1: R/W=10 means I/O */
    KSI_DO_LE = 4,
    KSI_DO_GE = 8,
    KSI_DO_GD = 16
};

enum ksi_dr7_anomaly {
    KSI_D7_RESERVED_BITS = 1,   /* a must-be-0 bit set or bit 10 clear */
    KSI_D7_EXEC_LENGTH = 2,     /* execute breakpoint with LEN != 00 */
    KSI_D7_LEN8_OUTSIDE_64 = 4, /* LEN=10 outside 64-bit mode: undefined */
    KSI_D7_IO_WITHOUT_DE = 8    /* R/W=10 with CR4.DE=0: undefined */
};

typedef struct {
    uint64_t raw;
    uint64_t local;          /* bit n: Ln */
    uint64_t global;         /* bit n: Gn */
    uint64_t condition[4];   /* enum ksi_dr_condition */
    uint64_t length[4];      /* bytes: 1, 2, 4, 8; 0 when undefined */
    uint64_t le;
    uint64_t ge;
    uint64_t rtm;
    uint64_t gd;
    uint64_t reserved_bits;  /* reserved bits that differ from their required value */
    uint64_t anomalies;      /* enum ksi_dr7_anomaly bits */
} ksi_dr7;

typedef struct {
    uint64_t raw;
    uint64_t hits;           /* bit n: Bn, breakpoint condition n was met */
    uint64_t bld;            /* bus-lock #DB: BLD is active-low (bit 11 clear) */
    uint64_t bd;
    uint64_t bs;
    uint64_t bt;
    uint64_t rtm;            /* #DB/#BP inside an RTM region: bit 16 clear */
    uint64_t reserved_bits;  /* reserved bits that differ from their fixed value */
} ksi_dr6;

typedef struct {
    uint64_t slot;           /* 0..3 */
    uint64_t condition;      /* enum ksi_dr_condition */
    uint64_t length;         /* bytes: 1, 2, 4 or 8 */
    uint64_t scope;          /* enum ksi_dr_scope bits */
    uint64_t address;        /* checked for alignment when has_address */
    uint64_t has_address;
} ksi_dr7_request;

int ksi_decode_dr7(uint64_t value, uint64_t options, ksi_dr7 *out);
int ksi_decode_dr7_batch(const uint64_t *values, size_t count, uint64_t options, ksi_dr7 *out);
int ksi_decode_dr6(uint64_t value, ksi_dr6 *out);
int ksi_decode_dr6_batch(const uint64_t *values, size_t count, ksi_dr6 *out);

/* Build a DR7 value from count requests. On a refusal, *failed is the index
   of the request at fault and the status says why. */
int ksi_encode_dr7(const ksi_dr7_request *requests, size_t count, uint64_t options,
                   uint64_t *dr7, size_t *failed);
/* KSI-CDEF-END */

#endif
