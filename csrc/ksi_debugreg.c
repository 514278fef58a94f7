/* ksi_debugreg.c - DR6 / DR7 decoding and DR7 encoding (SDM vol. 3B 17.2). */
#include <string.h>

#include "ksi_debugreg.h"

/* DR7: bit 10 reads as 1; bits 12, 14, 15 and 63:32 are 0 (SDM Figure 17-1). */
#define DR7_MUST_BE_ONE 0x400ULL
#define DR7_MUST_BE_ZERO (0xFFFFFFFF00000000ULL | (1ULL << 12) | (1ULL << 14) | (1ULL << 15))
/* DR6: bits 4-10 and 17-31 read as 1 when not in use, bit 12 and 63:32 as 0;
   BLD (11) and RTM (16) are active-low, so 1 means "did not happen". */
#define DR6_MUST_BE_ONE 0xFFFE07F0ULL
#define DR6_MUST_BE_ZERO (0xFFFFFFFF00000000ULL | (1ULL << 12))

/* LEN encodings: 00 = 1 byte, 01 = 2, 10 = 8 (64-bit mode only), 11 = 4. */
static const uint8_t len_bytes[4] = {1, 2, 8, 4};

int ksi_decode_dr7(uint64_t v, uint64_t options, ksi_dr7 *d)
{
    if (!d)
        return KSI_ERR_NULL_POINTER;
    memset(d, 0, sizeof *d);
    d->raw = v;
    for (unsigned n = 0; n < 4; n++) {
        uint64_t rw = (v >> (16 + 4 * n)) & 3, len = (v >> (18 + 4 * n)) & 3;
        int enabled = ((v >> (2 * n)) & 3) != 0;
        d->local |= ((v >> (2 * n)) & 1) << n;
        d->global |= ((v >> (2 * n + 1)) & 1) << n;
        d->condition[n] = rw;
        d->length[n] = len_bytes[len];
        if (len == 2 && !(options & KSI_DO_LONG_MODE)) {
            d->length[n] = 0;
            if (enabled) d->anomalies |= KSI_D7_LEN8_OUTSIDE_64;
        }
        if (enabled && rw == KSI_DR_EXECUTE && len != 0)
            d->anomalies |= KSI_D7_EXEC_LENGTH;
        if (enabled && rw == KSI_DR_IO && !(options & KSI_DO_CR4_DE))
            d->anomalies |= KSI_D7_IO_WITHOUT_DE;
    }
    d->le = (v >> 8) & 1;
    d->ge = (v >> 9) & 1;
    d->rtm = (v >> 11) & 1;
    d->gd = (v >> 13) & 1;
    d->reserved_bits = (v & DR7_MUST_BE_ZERO) | (~v & DR7_MUST_BE_ONE);
    if (d->reserved_bits)
        d->anomalies |= KSI_D7_RESERVED_BITS;
    return KSI_OK;
}

int ksi_decode_dr7_batch(const uint64_t *values, size_t count, uint64_t options, ksi_dr7 *out)
{
    if (!out || (!values && count))
        return KSI_ERR_NULL_POINTER;
    for (size_t i = 0; i < count; i++)
        ksi_decode_dr7(values[i], options, &out[i]);
    return KSI_OK;
}

int ksi_decode_dr6(uint64_t v, ksi_dr6 *d)
{
    if (!d)
        return KSI_ERR_NULL_POINTER;
    memset(d, 0, sizeof *d);
    d->raw = v;
    d->hits = v & 0xF;
    d->bld = !((v >> 11) & 1);
    d->bd = (v >> 13) & 1;
    d->bs = (v >> 14) & 1;
    d->bt = (v >> 15) & 1;
    d->rtm = !((v >> 16) & 1);
    d->reserved_bits = (v & DR6_MUST_BE_ZERO) | (~v & DR6_MUST_BE_ONE);
    return KSI_OK;
}

int ksi_decode_dr6_batch(const uint64_t *values, size_t count, ksi_dr6 *out)
{
    if (!out || (!values && count))
        return KSI_ERR_NULL_POINTER;
    for (size_t i = 0; i < count; i++)
        ksi_decode_dr6(values[i], &out[i]);
    return KSI_OK;
}

static int length_code(uint64_t bytes)
{
    switch (bytes) {
    case 1: return 0;
    case 2: return 1;
    case 8: return 2;
    case 4: return 3;
    default: return -1;
    }
}

int ksi_encode_dr7(const ksi_dr7_request *req, size_t count, uint64_t options,
                   uint64_t *dr7, size_t *failed)
{
    uint64_t v = DR7_MUST_BE_ONE;
    unsigned used = 0;

    if (!dr7 || !failed || (!req && count))
        return KSI_ERR_NULL_POINTER;
    *dr7 = 0;
    *failed = 0;
    for (size_t i = 0; i < count; i++) {
        const ksi_dr7_request *r = &req[i];
        int code = length_code(r->length);
        int status = KSI_OK;

        if (r->slot > 3)
            status = KSI_ERR_DR7_SLOT;
        else if (used & (1u << r->slot))
            status = KSI_ERR_DR7_DUPLICATE_SLOT;
        else if (r->condition > 3)
            status = KSI_ERR_DR7_CONDITION;
        else if (r->scope == 0 || r->scope > 3)
            status = KSI_ERR_DR7_SCOPE;
        else if (code < 0)
            status = KSI_ERR_DR7_LENGTH;
        else if (r->condition == KSI_DR_EXECUTE && r->length != 1)
            status = KSI_ERR_DR7_EXEC_LENGTH;
        else if (r->length == 8 && !(options & KSI_DO_LONG_MODE))
            status = KSI_ERR_DR7_LEN8_MODE;
        else if (r->condition == KSI_DR_IO && !(options & KSI_DO_CR4_DE))
            status = KSI_ERR_DR7_IO_NEEDS_DE;
        else if (r->has_address && (r->address & (r->length - 1)))
            status = KSI_ERR_DR7_ALIGNMENT;
        if (status != KSI_OK) {
            *failed = i;
            return status;
        }
        used |= 1u << r->slot;
        v |= (r->scope & 3) << (2 * r->slot);
        v |= r->condition << (16 + 4 * r->slot);
        v |= (uint64_t)code << (18 + 4 * r->slot);
    }
    if (options & KSI_DO_LE) v |= 1ULL << 8;
    if (options & KSI_DO_GE) v |= 1ULL << 9;
    if (options & KSI_DO_GD) v |= 1ULL << 13;
    *dr7 = v;
    return KSI_OK;
}
