/*
 * ksi_scan.h - scan a buffer of physical memory for structures that satisfy
 * a list of field constraints (psscan: _EPROCESS candidates).
 *
 * The constraints are data: Python builds them from a structure layout
 * (offsets of the fields for one Windows build) and C applies them to every
 * aligned position of a buffer. A 32-bit anchor word (masked compare) is
 * tested first at each position; only positions that pass it are checked
 * field by field, so the scan runs at memory speed on ordinary memory.
 *
 * Every read is inside [buf, buf + length): a candidate needs spec->size
 * bytes from its start, and every check must lie inside those bytes
 * (ksi_scan_validate). Nothing here allocates, prints or does I/O.
 *
 * Resumable: the scan stops when the output array is full and a second call
 * with the same cursor continues where it stopped.
 */
#ifndef KSI_SCAN_H
#define KSI_SCAN_H

#include "ksi_common.h"

/* KSI-CDEF-BEGIN */
/* How a check tests the field it reads (ksi_scan_check.kind). The value v
   is the little-endian unsigned integer of `length` bytes (1, 2, 4 or 8) at
   `offset`; for KSI_SCAN_CSTRING `length` is the size of the char array. */
enum ksi_scan_kind {
    KSI_SCAN_MASKED_EQUAL = 1,   /* (v & b) == a */
    KSI_SCAN_RANGE = 2,          /* a <= v <= b (unsigned) */
    KSI_SCAN_ALIGNED = 3,        /* (v & a) == 0 and v <= b, and v != 0 unless
                                    flags has KSI_SCAN_ZERO_OK */
    KSI_SCAN_CSTRING = 4         /* at least a printable ASCII bytes (0x20-0x7e)
                                    then a NUL, inside the length-byte array */
};

enum ksi_scan_flag {
    KSI_SCAN_ZERO_OK = 1         /* KSI_SCAN_ALIGNED: zero passes */
};

/* One constraint on one field of a candidate (32 bytes). */
typedef struct {
    uint32_t offset;      /* from the candidate's first byte */
    uint32_t length;      /* bytes read: 1, 2, 4, 8; a char array's size (1..256) */
    uint32_t kind;        /* enum ksi_scan_kind */
    uint32_t flags;       /* enum ksi_scan_flag */
    uint64_t a;
    uint64_t b;
} ksi_scan_check;

/* What a candidate looks like. */
typedef struct {
    uint64_t size;          /* bytes a candidate spans (every check lies inside) */
    uint64_t align;         /* candidates start at physical addresses that are
                               multiples of align (a power of two, 1..4096) */
    uint32_t anchor_offset; /* prefilter: the 32-bit word at this offset ... */
    uint32_t anchor_mask;   /* ... AND-ed with anchor_mask ... */
    uint32_t anchor_value;  /* ... must equal anchor_value */
    uint32_t check_count;
    const ksi_scan_check *checks;
} ksi_scan_spec;

/* Where a scan of one buffer stands; zero it to start. */
typedef struct {
    uint64_t position;      /* next offset in the buffer to look at */
    uint64_t anchors;       /* positions that passed the anchor word so far */
    uint64_t candidates;    /* positions that passed every check so far */
    uint32_t done;          /* 1 when every position up to start_limit was seen */
    uint32_t reserved;
} ksi_scan_cursor;

/* KSI_OK when the spec is usable: align a power of two in 1..4096, size >=
   4, the anchor word and every check inside size, known kinds, lengths
   1/2/4/8 for numbers and 1..256 for strings. */
int ksi_scan_validate(const ksi_scan_spec *spec);

/* Scan buf (length bytes holding physical memory from address base) for
   candidates that start at offsets in [cursor->position, start_limit) and
   whose size bytes lie inside buf. Offsets are aligned so that base + offset
   is a multiple of spec->align. Writes the physical address of each
   candidate (base + offset) to out, at most capacity of them (*count says
   how many); cursor->done is 1 when the range was finished, 0 when out
   filled up first (call again with the same cursor). Errors: NULL pointers,
   a spec that fails ksi_scan_validate, capacity 0. */
int ksi_scan(const uint8_t *buf, uint64_t length, uint64_t base, uint64_t start_limit,
             const ksi_scan_spec *spec, ksi_scan_cursor *cursor, uint64_t *out,
             size_t capacity, size_t *count);

/* Whether the structure at buf (length bytes) passes every check of spec
   (the anchor word included): 1 yes, 0 no or too short. */
int ksi_scan_match(const uint8_t *buf, uint64_t length, const ksi_scan_spec *spec);
/* KSI-CDEF-END */

#endif
