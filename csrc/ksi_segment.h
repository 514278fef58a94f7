/*
 * ksi_segment.h - segment selectors, segment descriptors and gates.
 *
 * Rules from the Intel SDM vol. 3A: 3.4.2 (selectors), 3.4.5 (descriptors),
 * 3.5 (system descriptor types), 5.8.3 (call gates), 6.11 and 6.14.1
 * (IDT gates), 7.2.2 and 7.2.3 (TSS descriptors).
 */
#ifndef KSI_SEGMENT_H
#define KSI_SEGMENT_H

#include "ksi_common.h"

/* KSI-CDEF-BEGIN */
enum ksi_descriptor_mode {
    KSI_MODE_LEGACY = 0,   /* protected mode: 8-byte system descriptors */
    KSI_MODE_LONG = 1      /* IA-32e mode: 16-byte system descriptors */
};

enum ksi_table_kind {
    KSI_TABLE_FLAT = 0,        /* every 8 bytes decoded alone */
    KSI_TABLE_SEGMENTS = 1,    /* GDT/LDT: long-mode system descriptors take two slots */
    KSI_TABLE_INTERRUPTS = 2   /* IDT: 16-byte entries in long mode, 8 in legacy */
};

enum ksi_descriptor_kind {
    KSI_KIND_NULL = 0,
    KSI_KIND_CODE = 1,
    KSI_KIND_DATA = 2,
    KSI_KIND_LDT = 3,
    KSI_KIND_TSS_AVAILABLE = 4,
    KSI_KIND_TSS_BUSY = 5,
    KSI_KIND_CALL_GATE = 6,
    KSI_KIND_INTERRUPT_GATE = 7,
    KSI_KIND_TRAP_GATE = 8,
    KSI_KIND_TASK_GATE = 9,
    KSI_KIND_RESERVED = 10
};

/* Bits of ksi_descriptor.flags. */
enum ksi_descriptor_flag {
    KSI_DF_SYSTEM = 1,         /* S bit clear: a system descriptor or gate */
    KSI_DF_PRESENT = 2,
    KSI_DF_GRANULARITY = 4,
    KSI_DF_LONG = 8,           /* L bit (bit 53) */
    KSI_DF_DB = 16,            /* D/B bit (bit 54) */
    KSI_DF_AVL = 32,
    KSI_DF_ACCESSED = 64,
    KSI_DF_READABLE = 128,     /* code: type bit 1 */
    KSI_DF_WRITABLE = 256,     /* data: type bit 1 */
    KSI_DF_CONFORMING = 512,   /* code: type bit 2 */
    KSI_DF_EXPAND_DOWN = 1024, /* data: type bit 2 */
    KSI_DF_EXECUTABLE = 2048,  /* type bit 3 of a code or data descriptor */
    KSI_DF_SIXTEEN_BYTES = 4096, /* occupies 16 bytes (long-mode system descriptor) */
    KSI_DF_HAS_UPPER = 8192    /* the upper 8 bytes were available and decoded */
};

/* Bits of ksi_descriptor.anomalies: evidence, never errors. */
enum ksi_descriptor_anomaly {
    KSI_DA_RESERVED_TYPE = 1,          /* system type reserved in this mode */
    KSI_DA_L_AND_D = 2,                /* code segment with L=1 and D=1 (reserved) */
    KSI_DA_NONCANONICAL_OFFSET = 4,    /* long-mode gate target not canonical */
    KSI_DA_UPPER_TYPE_NONZERO = 8,     /* call gate, TSS, LDT: upper dword bits 12:8 not 0 */
    KSI_DA_UPPER_MISSING = 16,         /* 16-byte descriptor cut off after 8 bytes */
    KSI_DA_NONCANONICAL_BASE = 32,     /* long-mode LDT/TSS base not canonical */
    KSI_DA_GATE_RESERVED_BITS = 64,    /* must-be-zero bits of a gate are set */
    KSI_DA_L_RESERVED = 128,           /* L set where it is reserved: legacy mode, data */
    KSI_DA_UPPER_RESERVED = 256        /* reserved bits of the upper half set */
};

typedef struct {
    uint64_t raw;
    uint64_t index;
    uint64_t table;            /* TI bit: 0 = GDT, 1 = LDT */
    uint64_t rpl;
} ksi_selector;

/* Members are ordered widest first so the struct has no inner padding;
   Python reads it with a struct format derived from cffi's offsets. */
typedef struct {
    uint64_t raw_lo;
    uint64_t raw_hi;           /* upper 8 bytes, 0 when not used */
    uint64_t slot_offset;      /* byte offset in the table (batch decoders) */
    uint64_t base;
    uint64_t offset;           /* gates: entry point offset */
    uint64_t limit;            /* effective limit: last valid offset if expand-up */
    uint64_t range_first;      /* first valid offset */
    uint64_t range_last;       /* last valid offset (expand-down: 0xFFFF or 0xFFFFFFFF) */
    uint32_t flags;            /* enum ksi_descriptor_flag bits */
    uint32_t anomalies;        /* enum ksi_descriptor_anomaly bits */
    uint32_t raw_limit;        /* the 20-bit limit field */
    uint16_t selector;         /* gates: target segment selector */
    uint16_t width;            /* operand/address size in bits: 16, 32, 64, or 0 */
    uint8_t kind;              /* enum ksi_descriptor_kind */
    uint8_t type;              /* the 4-bit type field */
    uint8_t dpl;
    uint8_t size;              /* bytes the descriptor occupies: 8 or 16 */
    uint8_t ist;               /* long-mode interrupt/trap gates */
    uint8_t param_count;       /* legacy call gates */
} ksi_descriptor;

int ksi_decode_selector(uint64_t value, ksi_selector *out);
/* Decode count little-endian 16-bit selectors from buf. */
int ksi_decode_selectors(const uint8_t *buf, size_t len, ksi_selector *out, size_t count);

/* Decode one descriptor from its low qword and, when have_hi, its high qword. */
int ksi_decode_descriptor(uint64_t lo, uint64_t hi, int have_hi, int mode, ksi_descriptor *out);

/* Decode a whole table held in buf. Writes at most capacity entries and the
   number written to *count. Returns KSI_ERR_TRUNCATED when len is not a
   multiple of 8 (the whole entries before the tail are still decoded). */
int ksi_decode_descriptor_table(const uint8_t *buf, size_t len, int mode, int table,
                                ksi_descriptor *out, size_t capacity, size_t *count);
/* KSI-CDEF-END */

#endif
