/* Paging-structure entries: ksi_decode_pte and the batch ksi_decode_pte_table
   with any mode, level and configuration. Invariants: the batch equals one
   decode per entry; the status names the bad argument; a leaf's page size
   is one the mode has and its frame is aligned to it (SDM 4.3-4.5). */
#include "fuzz_common.h"

#define MAX_COUNT 512

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ksi_pte batch[MAX_COUNT];
    fz_reader r = fz_reader_of(data, size);
    uint64_t value = fz_u64(&r);
    int mode = (int)(int8_t)fz_u8(&r) % 6;              /* -5..5: 0..3 valid */
    int level = (int)(int8_t)fz_u8(&r) % 7;             /* -6..6 */
    ksi_paging_config cfg;
    size_t count, len, width;
    const uint8_t *buf;
    ksi_pte one;
    int levels, rc;

    cfg.maxphyaddr = fz_u8(&r);
    cfg.pat_msr = fz_u64(&r);
    cfg.options = fz_u8(&r);
    count = fz_u16(&r) % (MAX_COUNT + 1);
    buf = fz_rest(&r, &len);
    levels = ksi_paging_levels(mode);
    width = mode == KSI_PAGING_32BIT ? 4 : 8;

    rc = ksi_decode_pte(value, &cfg, mode, level, &one);
    if (levels == 0) {
        FZ_CHECK(rc == KSI_ERR_BAD_MODE);
    } else if (level < 1 || level > levels) {
        FZ_CHECK(rc == KSI_ERR_BAD_LEVEL);
    } else if (cfg.maxphyaddr && (cfg.maxphyaddr < 32 || cfg.maxphyaddr > 52)) {
        FZ_CHECK(rc == KSI_ERR_BAD_ARGUMENT);
    } else if (mode == KSI_PAGING_32BIT && value > 0xFFFFFFFFULL) {
        FZ_CHECK(rc == KSI_ERR_OUT_OF_RANGE);
    } else {
        FZ_CHECK(rc == KSI_OK);
        FZ_CHECK(one.raw == value && one.mode == mode && one.level == level);
        FZ_CHECK(!!(one.flags & KSI_PF_PRESENT) == (value & 1));
        if (one.flags & KSI_PF_LEAF) {
            FZ_CHECK(fz_page_size_ok(mode, one.page_size));
            FZ_CHECK((one.frame & (one.page_size - 1)) == 0);
            FZ_CHECK(one.frame < (1ULL << 52));
        } else {
            FZ_CHECK(one.page_size == 0);
        }
        FZ_CHECK((one.reserved_bits & ~value) == 0);   /* only bits that are set */
    }
    FZ_CHECK(ksi_decode_pte(value, NULL, mode, level, &one) == KSI_ERR_NULL_POINTER);

    rc = ksi_decode_pte_table(buf, len, &cfg, mode, level, batch, count);
    if (levels == 0 && count <= len / width) {
        FZ_CHECK(rc == KSI_ERR_BAD_MODE || count == 0);
        return 0;
    }
    if (count > len / width) {
        FZ_CHECK(rc == KSI_ERR_TRUNCATED);
        return 0;
    }
    if (rc != KSI_OK) {
        /* A refused argument is refused for the first entry already. */
        uint64_t v0 = 0;
        FZ_CHECK(count > 0);
        for (size_t b = 0; b < width; b++)
            v0 |= (uint64_t)buf[b] << (8 * b);
        FZ_CHECK(ksi_decode_pte(v0, &cfg, mode, level, &one) == rc);
        return 0;
    }
    for (size_t i = 0; i < count; i++) {
        uint64_t v = 0;
        for (size_t b = 0; b < width; b++)
            v |= (uint64_t)buf[i * width + b] << (8 * b);
        FZ_CHECK(ksi_decode_pte(v, &cfg, mode, level, &one) == KSI_OK);
        FZ_CHECK(memcmp(&one, &batch[i], sizeof one) == 0);
    }
    return 0;
}
