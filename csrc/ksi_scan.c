/*
 * ksi_scan.c - constraint scan over a buffer of physical memory (psscan).
 *
 * The hot loop reads one 32-bit anchor word per aligned position and
 * compares it under a mask; the field checks run only where the anchor
 * matches (for _EPROCESS: Type = ProcessObject and the header's Size byte),
 * which on real memory is a tiny fraction of positions.
 */
#include <string.h>

#include "ksi_scan.h"

#define MAX_CSTRING 256u

static uint64_t load_le(const uint8_t *p, uint32_t n)
{
    uint64_t v = 0;
    for (uint32_t i = n; i-- > 0;)
        v = v << 8 | p[i];
    return v;
}

static uint32_t load_le32(const uint8_t *p)
{
    /* memcpy compiles to one load; the byte order fix-up keeps it portable. */
    uint32_t v;
    memcpy(&v, p, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

int ksi_scan_validate(const ksi_scan_spec *spec)
{
    if (!spec)
        return KSI_ERR_NULL_POINTER;
    if (spec->check_count && !spec->checks)
        return KSI_ERR_NULL_POINTER;
    if (spec->align == 0 || spec->align > 4096 || (spec->align & (spec->align - 1)))
        return KSI_ERR_BAD_ARGUMENT;
    if (spec->size < 4 || spec->size > (1u << 24))
        return KSI_ERR_BAD_ARGUMENT;
    if ((uint64_t)spec->anchor_offset + 4 > spec->size)
        return KSI_ERR_BAD_ARGUMENT;
    for (uint32_t i = 0; i < spec->check_count; i++) {
        const ksi_scan_check *c = &spec->checks[i];
        switch (c->kind) {
        case KSI_SCAN_MASKED_EQUAL:
        case KSI_SCAN_RANGE:
        case KSI_SCAN_ALIGNED:
            if (c->length != 1 && c->length != 2 && c->length != 4 && c->length != 8)
                return KSI_ERR_BAD_ARGUMENT;
            break;
        case KSI_SCAN_CSTRING:
            if (c->length == 0 || c->length > MAX_CSTRING || c->a >= c->length)
                return KSI_ERR_BAD_ARGUMENT;
            break;
        default:
            return KSI_ERR_BAD_ARGUMENT;
        }
        if ((uint64_t)c->offset + c->length > spec->size)
            return KSI_ERR_BAD_ARGUMENT;
    }
    return KSI_OK;
}

static int check_cstring(const uint8_t *p, uint32_t length, uint64_t min_chars)
{
    for (uint32_t i = 0; i < length; i++) {
        uint8_t ch = p[i];
        if (ch == 0)
            return i >= min_chars;
        if (ch < 0x20 || ch > 0x7e)
            return 0;
    }
    return 0;           /* no NUL inside the array */
}

/* The field checks (the anchor already matched); p has spec->size bytes. */
static int check_fields(const uint8_t *p, const ksi_scan_spec *spec)
{
    for (uint32_t i = 0; i < spec->check_count; i++) {
        const ksi_scan_check *c = &spec->checks[i];
        const uint8_t *f = p + c->offset;
        uint64_t v;

        if (c->kind == KSI_SCAN_CSTRING) {
            if (!check_cstring(f, c->length, c->a))
                return 0;
            continue;
        }
        v = load_le(f, c->length);
        switch (c->kind) {
        case KSI_SCAN_MASKED_EQUAL:
            if ((v & c->b) != c->a)
                return 0;
            break;
        case KSI_SCAN_RANGE:
            if (v < c->a || v > c->b)
                return 0;
            break;
        default:  /* KSI_SCAN_ALIGNED (validated) */
            if ((v & c->a) || v > c->b || (v == 0 && !(c->flags & KSI_SCAN_ZERO_OK)))
                return 0;
            break;
        }
    }
    return 1;
}

int ksi_scan_match(const uint8_t *buf, uint64_t length, const ksi_scan_spec *spec)
{
    if (!buf || ksi_scan_validate(spec) != KSI_OK || length < spec->size)
        return 0;
    if ((load_le32(buf + spec->anchor_offset) & spec->anchor_mask) != spec->anchor_value)
        return 0;
    return check_fields(buf, spec);
}

int ksi_scan(const uint8_t *buf, uint64_t length, uint64_t base, uint64_t start_limit,
             const ksi_scan_spec *spec, ksi_scan_cursor *cursor, uint64_t *out,
             size_t capacity, size_t *count)
{
    uint64_t align, pos, end, size;
    uint32_t mask, value;
    const uint8_t *anchor;
    size_t n = 0;
    int rc;

    if (!cursor || !out || !count || (!buf && length))
        return KSI_ERR_NULL_POINTER;
    *count = 0;
    rc = ksi_scan_validate(spec);
    if (rc != KSI_OK)
        return rc;
    if (capacity == 0)
        return KSI_ERR_CAPACITY;
    if (cursor->done)
        return KSI_OK;

    align = spec->align;
    size = spec->size;
    /* The last start that leaves size bytes inside buf, and the caller's limit. */
    end = length >= size ? length - size + 1 : 0;
    if (start_limit < end)
        end = start_limit;
    /* First offset at or after position whose physical address is aligned. */
    pos = cursor->position;
    pos += (align - ((base + pos) & (align - 1))) & (align - 1);
    if (pos < cursor->position) {           /* wrapped: nothing left */
        cursor->done = 1;
        return KSI_OK;
    }
    mask = spec->anchor_mask;
    value = spec->anchor_value;
    /* An empty buffer may be NULL: no pointer arithmetic on it (end is 0). */
    anchor = buf ? buf + spec->anchor_offset : NULL;

    while (pos < end) {
        if ((load_le32(anchor + pos) & mask) == value) {
            cursor->anchors++;
            if (check_fields(buf + pos, spec)) {
                if (n == capacity) {
                    cursor->position = pos;
                    cursor->anchors--;      /* counted again on resume */
                    *count = n;
                    return KSI_OK;
                }
                out[n++] = base + pos;
                cursor->candidates++;
            }
        }
        if (end - pos <= align)
            break;
        pos += align;
    }
    cursor->position = end;
    cursor->done = 1;
    *count = n;
    return KSI_OK;
}
