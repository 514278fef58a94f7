/* Selectors: ksi_decode_selector and the batch ksi_decode_selectors.
   Invariants: the batch equals one decode per 16-bit word; a value wider
   than 16 bits is refused; fields rebuild the value (SDM 3.4.2). */
#include "fuzz_common.h"

#define MAX_COUNT 512

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ksi_selector batch[MAX_COUNT];
    fz_reader r = fz_reader_of(data, size);
    uint64_t value = fz_u64(&r);
    size_t count = fz_u16(&r) % (MAX_COUNT + 1), len;
    const uint8_t *buf = fz_rest(&r, &len);
    ksi_selector one;
    int rc;

    rc = ksi_decode_selector(value, &one);
    FZ_CHECK(rc == (value > 0xFFFF ? KSI_ERR_OUT_OF_RANGE : KSI_OK));
    if (rc == KSI_OK)
        FZ_CHECK((one.index << 3 | one.table << 2 | one.rpl) == value && one.raw == value);
    FZ_CHECK(ksi_decode_selector(value, NULL) == KSI_ERR_NULL_POINTER);

    rc = ksi_decode_selectors(buf, len, batch, count);
    if (count > len / 2) {
        FZ_CHECK(rc == KSI_ERR_TRUNCATED);
        return 0;
    }
    FZ_CHECK(rc == KSI_OK);
    for (size_t i = 0; i < count; i++) {
        FZ_CHECK(ksi_decode_selector(buf[2 * i] | (uint64_t)buf[2 * i + 1] << 8, &one) == KSI_OK);
        FZ_CHECK(memcmp(&one, &batch[i], sizeof one) == 0);
    }
    return 0;
}
