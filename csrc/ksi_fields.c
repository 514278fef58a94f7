/* ksi_fields.c - batch extraction of record fields, bounds-checked (see ksi_fields.h). */
#include "ksi_fields.h"

int ksi_fields_validate(const ksi_field_spec *fields, size_t field_count)
{
    size_t f;
    if (field_count && !fields)
        return KSI_ERR_NULL_POINTER;
    for (f = 0; f < field_count; f++) {
        const ksi_field_spec *s = &fields[f];
        if (s->size != 1 && s->size != 2 && s->size != 4 && s->size != 8)
            return KSI_ERR_BAD_ARGUMENT;
        if (s->flags & ~(uint32_t)KSI_FIELD_SIGNED)
            return KSI_ERR_BAD_ARGUMENT;
        if (s->bit_length > 64 || s->bit_position >= 64
            || (uint64_t)s->bit_position + s->bit_length > 8u * (uint64_t)s->size)
            return KSI_ERR_BAD_ARGUMENT;
    }
    return KSI_OK;
}

/* Little-endian loads written byte by byte (no alignment or aliasing
   assumptions); compilers turn each case into one load on x86. */
static uint64_t load_le(const uint8_t *p, uint32_t size)
{
    switch (size) {
    case 1:
        return p[0];
    case 2:
        return (uint64_t)p[0] | (uint64_t)p[1] << 8;
    case 4:
        return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16
            | (uint64_t)p[3] << 24;
    default:
        return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16
            | (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40
            | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
    }
}

static uint64_t field_value(const uint8_t *p, const ksi_field_spec *s)
{
    uint64_t v = load_le(p, s->size);
    uint32_t width = 8u * s->size;
    if (s->bit_length) {
        v >>= s->bit_position;
        width = s->bit_length;
        if (width < 64)
            v &= (UINT64_C(1) << width) - 1;
    }
    if ((s->flags & KSI_FIELD_SIGNED) && width < 64 && ((v >> (width - 1)) & 1))
        v |= ~((UINT64_C(1) << width) - 1);
    return v;
}

int ksi_extract_fields(const uint8_t *buf, size_t length,
                       const ksi_field_spec *fields, size_t field_count,
                       const uint64_t *starts, size_t record_count,
                       uint64_t *out, uint8_t *status)
{
    size_t r, f;
    int rc = ksi_fields_validate(fields, field_count);
    if (rc != KSI_OK)
        return rc;
    if (record_count && (!starts || !status || (field_count && !out)))
        return KSI_ERR_NULL_POINTER;
    if (length && !buf)
        return KSI_ERR_NULL_POINTER;
    if (field_count && record_count > SIZE_MAX / field_count)
        return KSI_ERR_CAPACITY;
    for (r = 0; r < record_count; r++) {
        uint64_t start = starts[r];
        uint64_t *row = out + r * field_count;
        status[r] = KSI_OK;
        for (f = 0; f < field_count; f++) {
            const ksi_field_spec *s = &fields[f];
            /* start + offset + size <= length, without overflow */
            if (start > length || (uint64_t)s->offset > length - start
                || (uint64_t)s->size > length - start - s->offset) {
                row[f] = 0;
                status[r] = KSI_ERR_TRUNCATED;
                continue;
            }
            row[f] = field_value(buf + start + s->offset, s);
        }
    }
    return KSI_OK;
}
