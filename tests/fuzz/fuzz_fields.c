/* The field extractor: ksi_fields_validate and ksi_extract_fields over
   field specs, record starts and a buffer taken from the input (the specs
   raw, so invalid sizes, flags and bit ranges are tried too).
   Invariants: validation says what the documented rule says (size 1/2/4/8,
   only the SIGNED flag, bits inside the value); every value of a field
   inside the buffer equals a byte-by-byte, bit-by-bit little-endian read
   done here; a field past the end reads 0 and marks its record
   KSI_ERR_TRUNCATED; the batch equals one call per record; nothing is
   written past the output arrays. The buffer is the tail of libFuzzer's
   exact-size copy of the input, so any read past its end is reported.

   Input layout (little-endian):
     0  u8  field count (% 17)
     1  u8  record count (% 33)
     2  u8  flags: bit 0 = starts are u16 (small, mostly inside the buffer),
               else u64 (any value, overflow near 2^64 included)
     3  u8  reserved
     4  16 x {u32 offset, u32 size, u32 flags, u32 bit_position, u32 bit_length}
   324  32 x u64 record starts (u16 when flag bit 0: low 16 bits of each)
   580  the buffer */
#include "fuzz_common.h"

#define MAX_FIELDS 16
#define MAX_RECORDS 32
#define HEADER (4 + MAX_FIELDS * 20 + MAX_RECORDS * 8)

static int spec_ok(const ksi_field_spec *s)
{
    if (s->size != 1 && s->size != 2 && s->size != 4 && s->size != 8)
        return 0;
    if (s->flags > 1)
        return 0;
    /* bit_position 64 is refused even with bit_length 0 (no such bit). */
    return s->bit_position < 64 && (uint64_t)s->bit_position + s->bit_length <= 8u * s->size;
}

/* The reference read: one bit at a time from the bytes. */
static uint64_t reference_value(const uint8_t *p, const ksi_field_spec *s)
{
    unsigned first = s->bit_length ? s->bit_position : 0;
    unsigned width = s->bit_length ? s->bit_length : 8 * s->size;
    uint64_t v = 0;
    for (unsigned i = 0; i < width; i++) {
        unsigned bit = first + i;
        if ((p[bit / 8] >> (bit % 8)) & 1)
            v |= (uint64_t)1 << i;
    }
    if ((s->flags & KSI_FIELD_SIGNED) && ((v >> (width - 1)) & 1))
        for (unsigned i = width; i < 64; i++)
            v |= (uint64_t)1 << i;
    return v;
}

static int inside(uint64_t start, const ksi_field_spec *s, size_t length)
{
    /* start + offset + size <= length, with offset + size < 2^33 */
    return start <= length && (uint64_t)s->offset + s->size <= (uint64_t)length - start;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ksi_field_spec specs[MAX_FIELDS];
    static uint64_t starts[MAX_RECORDS];
    static uint64_t out[MAX_RECORDS * MAX_FIELDS + 1];
    static uint8_t status[MAX_RECORDS + 1];
    static uint64_t row[MAX_FIELDS + 1];
    fz_reader r = fz_reader_of(data, size);
    size_t fields, records, length;
    const uint8_t *buf;
    int flags, valid = 1, rc;
    uint8_t one_status;

    fields = fz_u8(&r) % (MAX_FIELDS + 1);
    records = fz_u8(&r) % (MAX_RECORDS + 1);
    flags = fz_u8(&r);
    fz_u8(&r);
    for (size_t f = 0; f < MAX_FIELDS; f++) {
        specs[f].offset = fz_u32(&r);
        specs[f].size = fz_u32(&r);
        specs[f].flags = fz_u32(&r);
        specs[f].bit_position = fz_u32(&r);
        specs[f].bit_length = fz_u32(&r);
        if (f < fields)
            valid &= spec_ok(&specs[f]);
    }
    for (size_t i = 0; i < MAX_RECORDS; i++)
        starts[i] = flags & 1 ? fz_u64(&r) & 0xFFFF : fz_u64(&r);
    buf = fz_rest(&r, &length);
    if (length == 0)
        buf = NULL;        /* size 0: libFuzzer's pointer may sit past the input */

    FZ_CHECK((ksi_fields_validate(specs, fields) == KSI_OK) == valid);
    FZ_CHECK(ksi_fields_validate(NULL, 0) == KSI_OK);
    FZ_CHECK(fields == 0 || ksi_fields_validate(NULL, fields) == KSI_ERR_NULL_POINTER);

    memset(out, 0xA5, sizeof out);
    memset(status, 0xA5, sizeof status);
    rc = ksi_extract_fields(buf, length, specs, fields, starts, records, out, status);
    if (!valid) {
        FZ_CHECK(rc == KSI_ERR_BAD_ARGUMENT);
        FZ_CHECK(status[0] == 0xA5 && out[0] == 0xA5A5A5A5A5A5A5A5ULL);
        return 0;
    }
    FZ_CHECK(rc == KSI_OK);
    /* Nothing written past record_count rows / status bytes. */
    FZ_CHECK(out[records * fields] == 0xA5A5A5A5A5A5A5A5ULL && status[records] == 0xA5);

    for (size_t i = 0; i < records; i++) {
        int truncated = 0;
        for (size_t f = 0; f < fields; f++) {
            uint64_t got = out[i * fields + f];
            if (inside(starts[i], &specs[f], length)) {
                FZ_CHECK(got == reference_value(buf + starts[i] + specs[f].offset, &specs[f]));
            } else {
                FZ_CHECK(got == 0);
                truncated = 1;
            }
        }
        FZ_CHECK(status[i] == (truncated ? KSI_ERR_TRUNCATED : KSI_OK));
        /* One record alone gives the same row. */
        memset(row, 0x5A, sizeof row);
        one_status = 0x5A;
        FZ_CHECK(ksi_extract_fields(buf, length, specs, fields, &starts[i], 1, row, &one_status)
                 == KSI_OK);
        FZ_CHECK(one_status == status[i] && row[fields] == 0x5A5A5A5A5A5A5A5AULL);
        FZ_CHECK(fields == 0 || memcmp(row, &out[i * fields], fields * sizeof *row) == 0);
    }

    /* The documented refusals, none of which may touch the arrays. */
    if (length)
        FZ_CHECK(ksi_extract_fields(NULL, length, specs, fields, starts, records, out, status)
                 == KSI_ERR_NULL_POINTER);
    if (records)
        FZ_CHECK(ksi_extract_fields(buf, length, specs, fields, NULL, records, out, status)
                 == KSI_ERR_NULL_POINTER);
    if (fields >= 2)
        FZ_CHECK(ksi_extract_fields(buf, length, specs, fields, starts, SIZE_MAX / fields + 1,
                                    out, status) == KSI_ERR_CAPACITY);
    return 0;
}
