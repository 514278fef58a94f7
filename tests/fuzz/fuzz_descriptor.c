/* Descriptors and gates: ksi_decode_descriptor and the table decoder
   ksi_decode_descriptor_table (every mode and table kind, small output
   arrays). Invariants: every table row equals the single decode of the
   bytes at its slot offset; rows tile the buffer in order; the status says
   truncated / out of room exactly when it should. */
#include "fuzz_common.h"

#define MAX_ROWS 1024

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ksi_descriptor rows[MAX_ROWS];
    fz_reader r = fz_reader_of(data, size);
    uint64_t lo = fz_u64(&r), hi = fz_u64(&r);
    unsigned sel = fz_u8(&r);
    int mode = (sel & 3) == 3 ? -1 : (int)(sel & 3);   /* 2 and -1: invalid */
    int table = (int)((sel >> 2) & 3);                 /* 3: invalid */
    int have_hi = (sel >> 4) & 1;
    size_t capacity = fz_u16(&r) % (MAX_ROWS + 1), count = 12345, len, pos = 0;
    const uint8_t *buf = fz_rest(&r, &len);
    ksi_descriptor one;
    int rc;

    rc = ksi_decode_descriptor(lo, hi, have_hi, mode, &one);
    FZ_CHECK(rc == (mode == 0 || mode == 1 ? KSI_OK : KSI_ERR_BAD_MODE));
    if (rc == KSI_OK) {
        FZ_CHECK(one.size == 8 || one.size == 16);
        FZ_CHECK(one.kind <= KSI_KIND_RESERVED && one.type < 16 && one.dpl < 4);
        FZ_CHECK(one.raw_lo == lo && (one.raw_hi == 0 || one.raw_hi == hi));
    }

    rc = ksi_decode_descriptor_table(buf, len, mode, table, rows, capacity, &count);
    if (mode != 0 && mode != 1) {
        FZ_CHECK(rc == KSI_ERR_BAD_MODE && count == 0);
        return 0;
    }
    if (table > 2) {
        FZ_CHECK(rc == KSI_ERR_BAD_ARGUMENT && count == 0);
        return 0;
    }
    FZ_CHECK(count <= capacity);
    for (size_t i = 0; i < count; i++) {
        const ksi_descriptor *d = &rows[i];
        uint64_t row_lo = le64(buf + pos), row_hi = 0;
        unsigned type = (unsigned)(row_lo >> 40) & 15;
        /* IA-32e: IDT slots are 16 bytes; in a GDT/LDT, LDT, TSS and gate
           descriptors (S=0, types 2, 9, 11, 12, 14, 15) are (SDM 3.5). */
        int sixteen = row_lo != 0 && !((row_lo >> 44) & 1)
                      && (type == 2 || type == 9 || type == 11 || type == 12 || type >= 14);
        int row_have_hi = mode == KSI_MODE_LONG && table != KSI_TABLE_FLAT
                          && (table == KSI_TABLE_INTERRUPTS || sixteen) && len - pos >= 16;
        FZ_CHECK(d->slot_offset == pos);
        FZ_CHECK(pos + 8 <= len);
        if (row_have_hi)
            row_hi = le64(buf + pos + 8);
        FZ_CHECK(ksi_decode_descriptor(row_lo, row_hi, row_have_hi, mode, &one)
                 == KSI_OK);
        one.slot_offset = pos;
        FZ_CHECK(memcmp(&one, d, sizeof one) == 0);
        pos += row_have_hi ? 16 : 8;
    }
    if (rc == KSI_ERR_CAPACITY) {
        FZ_CHECK(count == capacity && len - pos >= 8);
    } else {
        FZ_CHECK(len - pos < 8);                         /* every whole entry decoded */
        FZ_CHECK(rc == (len % 8 ? KSI_ERR_TRUNCATED : KSI_OK));
    }
    return 0;
}
