/*
 * ksi_segment.c - selectors, segment descriptors and gates (SDM vol. 3A
 * 3.4.2, 3.4.5, 3.5, 5.8.3, 6.11, 6.14.1, 7.2.2, 7.2.3).
 */
#include <string.h>

#include "ksi_segment.h"

static uint64_t bits(uint64_t v, unsigned lo, unsigned n)
{
    return (v >> lo) & ((n >= 64) ? ~0ULL : ((1ULL << n) - 1));
}

static uint64_t load_le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* A 48-bit linear address is canonical when bits 63:47 are all equal. */
static int canonical48(uint64_t va)
{
    uint64_t top = va >> 47;
    return top == 0 || top == 0x1FFFF;
}

int ksi_decode_selector(uint64_t value, ksi_selector *out)
{
    if (!out)
        return KSI_ERR_NULL_POINTER;
    if (value > 0xFFFF)
        return KSI_ERR_OUT_OF_RANGE;
    out->raw = value;
    out->index = value >> 3;
    out->table = (value >> 2) & 1;
    out->rpl = value & 3;
    return KSI_OK;
}

int ksi_decode_selectors(const uint8_t *buf, size_t len, ksi_selector *out, size_t count)
{
    if (!out || (!buf && count))
        return KSI_ERR_NULL_POINTER;
    if (count > len / 2)
        return KSI_ERR_TRUNCATED;
    for (size_t i = 0; i < count; i++)
        ksi_decode_selector(load_le(buf + 2 * i, 2), &out[i]);
    return KSI_OK;
}

/* Kind of a system descriptor (S=0) by type, in each mode (SDM Table 3-2). */
static const uint8_t legacy_system_kind[16] = {
    KSI_KIND_RESERVED, KSI_KIND_TSS_AVAILABLE, KSI_KIND_LDT, KSI_KIND_TSS_BUSY,
    KSI_KIND_CALL_GATE, KSI_KIND_TASK_GATE, KSI_KIND_INTERRUPT_GATE, KSI_KIND_TRAP_GATE,
    KSI_KIND_RESERVED, KSI_KIND_TSS_AVAILABLE, KSI_KIND_RESERVED, KSI_KIND_TSS_BUSY,
    KSI_KIND_CALL_GATE, KSI_KIND_RESERVED, KSI_KIND_INTERRUPT_GATE, KSI_KIND_TRAP_GATE,
};
static const uint8_t long_system_kind[16] = {
    KSI_KIND_RESERVED, KSI_KIND_RESERVED, KSI_KIND_LDT, KSI_KIND_RESERVED,
    KSI_KIND_RESERVED, KSI_KIND_RESERVED, KSI_KIND_RESERVED, KSI_KIND_RESERVED,
    KSI_KIND_RESERVED, KSI_KIND_TSS_AVAILABLE, KSI_KIND_RESERVED, KSI_KIND_TSS_BUSY,
    KSI_KIND_CALL_GATE, KSI_KIND_RESERVED, KSI_KIND_INTERRUPT_GATE, KSI_KIND_TRAP_GATE,
};

static int is_gate(uint64_t kind)
{
    return kind == KSI_KIND_CALL_GATE || kind == KSI_KIND_INTERRUPT_GATE ||
           kind == KSI_KIND_TRAP_GATE || kind == KSI_KIND_TASK_GATE;
}

/* In IA-32e mode every LDT, TSS and gate descriptor is 16 bytes (SDM 3.5). */
static int is_sixteen_byte(int mode, uint64_t kind)
{
    return mode == KSI_MODE_LONG && kind != KSI_KIND_NULL && kind != KSI_KIND_CODE &&
           kind != KSI_KIND_DATA && kind != KSI_KIND_RESERVED;
}

static void decode_segment(uint64_t lo, int mode, ksi_descriptor *d)
{
    uint64_t type = d->type;
    int code = (type & 8) != 0;

    d->kind = code ? KSI_KIND_CODE : KSI_KIND_DATA;
    d->flags |= KSI_DF_ACCESSED * (type & 1);
    if (code) {
        d->flags |= KSI_DF_EXECUTABLE;
        if (type & 2) d->flags |= KSI_DF_READABLE;
        if (type & 4) d->flags |= KSI_DF_CONFORMING;
    } else {
        if (type & 2) d->flags |= KSI_DF_WRITABLE;
        if (type & 4) d->flags |= KSI_DF_EXPAND_DOWN;
    }
    if (bits(lo, 53, 1)) {
        if (mode != KSI_MODE_LONG || !code)
            d->anomalies |= KSI_DA_L_RESERVED;
        else if (bits(lo, 54, 1))
            d->anomalies |= KSI_DA_L_AND_D;
    }
    if (code && mode == KSI_MODE_LONG && bits(lo, 53, 1))
        d->width = 64;
    else
        d->width = bits(lo, 54, 1) ? 32 : 16;

    /* Expand-down: valid offsets run from limit+1 up to 64 KiB or 4 GiB
       minus one, by the B flag (SDM 3.4.5.1). The range may be empty. */
    if (!code && (type & 4)) {
        d->range_first = d->limit + 1;
        d->range_last = bits(lo, 54, 1) ? 0xFFFFFFFFULL : 0xFFFFULL;
    } else {
        d->range_first = 0;
        d->range_last = d->limit;
    }
}

static void decode_gate(uint64_t lo, uint64_t hi, int have_hi, int mode, ksi_descriptor *d)
{
    uint64_t type = d->type;

    d->selector = bits(lo, 16, 16);
    d->base = 0;
    d->raw_limit = 0;
    d->limit = 0;
    if (d->kind == KSI_KIND_TASK_GATE) {
        /* Only the TSS selector is used; everything else is reserved. */
        d->width = 0;
        if (bits(lo, 0, 16) || bits(lo, 32, 8) || bits(lo, 48, 16))
            d->anomalies |= KSI_DA_GATE_RESERVED_BITS;
        return;
    }
    d->offset = bits(lo, 0, 16) | (bits(lo, 48, 16) << 16);
    if (mode == KSI_MODE_LONG) {
        d->width = 64;
        if (have_hi)
            d->offset |= bits(hi, 0, 32) << 32;
        if (d->kind == KSI_KIND_CALL_GATE) {
            if (bits(lo, 32, 8))
                d->anomalies |= KSI_DA_GATE_RESERVED_BITS;
        } else {
            d->ist = bits(lo, 32, 3);
            if (bits(lo, 35, 5))
                d->anomalies |= KSI_DA_GATE_RESERVED_BITS;
        }
        if (have_hi && !canonical48(d->offset))
            d->anomalies |= KSI_DA_NONCANONICAL_OFFSET;
    } else {
        d->width = (type & 8) ? 32 : 16;
        if (d->kind == KSI_KIND_CALL_GATE)
            d->param_count = bits(lo, 32, 5);
        if (bits(lo, 37, 3))
            d->anomalies |= KSI_DA_GATE_RESERVED_BITS;
        if (d->width == 16 && bits(lo, 48, 16)) {
            /* 16-bit gates carry only offset 15:0; bits 63:48 are unused. */
            d->anomalies |= KSI_DA_GATE_RESERVED_BITS;
            d->offset &= 0xFFFF;
        }
    }
}

static void decode_into(uint64_t lo, uint64_t hi, int have_hi, int mode, ksi_descriptor *d)
{
    d->raw_lo = lo;
    d->size = 8;
    d->type = bits(lo, 40, 4);
    d->dpl = bits(lo, 45, 2);
    d->base = bits(lo, 16, 24) | (bits(lo, 56, 8) << 24);
    d->raw_limit = bits(lo, 0, 16) | (bits(lo, 48, 4) << 16);
    d->limit = bits(lo, 55, 1) ? ((d->raw_limit << 12) | 0xFFF) : d->raw_limit;
    if (bits(lo, 44, 1) == 0) d->flags |= KSI_DF_SYSTEM;
    if (bits(lo, 47, 1)) d->flags |= KSI_DF_PRESENT;
    if (bits(lo, 55, 1)) d->flags |= KSI_DF_GRANULARITY;
    if (bits(lo, 53, 1)) d->flags |= KSI_DF_LONG;
    if (bits(lo, 54, 1)) d->flags |= KSI_DF_DB;
    if (bits(lo, 52, 1)) d->flags |= KSI_DF_AVL;

    if (lo == 0 && (!have_hi || hi == 0)) {
        d->kind = KSI_KIND_NULL;
        if (have_hi && mode == KSI_MODE_LONG)
            d->size = 16;
        d->range_first = 1;   /* an empty range: nothing is addressable */
        return;
    }
    if (!(d->flags & KSI_DF_SYSTEM)) {
        decode_segment(lo, mode, d);
        return;
    }

    d->kind = (mode == KSI_MODE_LONG ? long_system_kind : legacy_system_kind)[d->type];
    if (d->kind == KSI_KIND_RESERVED) {
        d->anomalies |= KSI_DA_RESERVED_TYPE;
        d->range_first = 1;
        return;
    }
    if (is_sixteen_byte(mode, d->kind)) {
        d->size = 16;
        d->flags |= KSI_DF_SIXTEEN_BYTES;
        if (have_hi) {
            d->raw_hi = hi;
            d->flags |= KSI_DF_HAS_UPPER;
            if (d->kind == KSI_KIND_INTERRUPT_GATE || d->kind == KSI_KIND_TRAP_GATE) {
                /* SDM vol. 3A Figure 6-8: the whole upper dword of a 64-bit
                   IDT gate is reserved; it has no type field. */
                if (bits(hi, 32, 32))
                    d->anomalies |= KSI_DA_UPPER_RESERVED;
            } else {
                /* Figures 5-9 (call gate) and 7-4 (TSS, LDT): bits 12:8 of
                   the upper dword are a type field of 0, so the upper half
                   can never pass for a valid descriptor; the rest is
                   reserved. */
                if (bits(hi, 40, 5))
                    d->anomalies |= KSI_DA_UPPER_TYPE_NONZERO;
                if (bits(hi, 32, 8) || bits(hi, 45, 19))
                    d->anomalies |= KSI_DA_UPPER_RESERVED;
            }
        } else {
            d->anomalies |= KSI_DA_UPPER_MISSING;
        }
    }
    if (is_gate(d->kind)) {
        decode_gate(lo, hi, have_hi, mode, d);
        d->range_first = 1;
        return;
    }

    /* LDT and TSS descriptors: a segment with a base and limit. */
    if (d->kind == KSI_KIND_TSS_AVAILABLE || d->kind == KSI_KIND_TSS_BUSY)
        d->width = (mode == KSI_MODE_LONG) ? 64 : ((d->type & 8) ? 32 : 16);
    if (mode == KSI_MODE_LONG && have_hi) {
        d->base |= bits(hi, 0, 32) << 32;
        if (!canonical48(d->base))
            d->anomalies |= KSI_DA_NONCANONICAL_BASE;
    }
    d->range_first = 0;
    d->range_last = d->limit;
    return;
}

int ksi_decode_descriptor(uint64_t lo, uint64_t hi, int have_hi, int mode, ksi_descriptor *out)
{
    /* Built in a local and copied once: batch output is written one time. */
    ksi_descriptor d;

    if (!out)
        return KSI_ERR_NULL_POINTER;
    if (mode != KSI_MODE_LEGACY && mode != KSI_MODE_LONG)
        return KSI_ERR_BAD_MODE;
    if (mode == KSI_MODE_LEGACY)
        have_hi = 0;   /* protected-mode descriptors are 8 bytes: no upper half */
    memset(&d, 0, sizeof d);
    decode_into(lo, hi, have_hi, mode, &d);
    *out = d;
    return KSI_OK;
}

/* Does this low qword start a 16-byte IA-32e system descriptor? */
static int starts_sixteen_byte(uint64_t lo)
{
    return lo != 0 && bits(lo, 44, 1) == 0 &&
           is_sixteen_byte(KSI_MODE_LONG, long_system_kind[bits(lo, 40, 4)]);
}

int ksi_decode_descriptor_table(const uint8_t *buf, size_t len, int mode, int table,
                                ksi_descriptor *out, size_t capacity, size_t *count)
{
    size_t pos = 0, n = 0;

    if (!count || !out || (!buf && len))
        return KSI_ERR_NULL_POINTER;
    *count = 0;
    if (mode != KSI_MODE_LEGACY && mode != KSI_MODE_LONG)
        return KSI_ERR_BAD_MODE;
    if (table != KSI_TABLE_FLAT && table != KSI_TABLE_SEGMENTS && table != KSI_TABLE_INTERRUPTS)
        return KSI_ERR_BAD_ARGUMENT;

    while (len - pos >= 8) {
        uint64_t lo = load_le(buf + pos, 8), hi = 0;
        int have_hi = 0;
        size_t step = 8;

        if (n == capacity) {
            *count = n;
            return KSI_ERR_CAPACITY;
        }
        if (mode == KSI_MODE_LONG && table != KSI_TABLE_FLAT) {
            int wants_hi = table == KSI_TABLE_INTERRUPTS || starts_sixteen_byte(lo);
            if (wants_hi && len - pos >= 16) {
                hi = load_le(buf + pos + 8, 8);
                have_hi = 1;
                step = 16;
            }
        }
        ksi_decode_descriptor(lo, hi, have_hi, mode, &out[n]);
        out[n].slot_offset = pos;
        n++;
        pos += step;
    }
    *count = n;
    return (len % 8) ? KSI_ERR_TRUNCATED : KSI_OK;
}
