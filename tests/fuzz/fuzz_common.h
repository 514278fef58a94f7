/*
 * fuzz_common.h - what every libFuzzer harness of the ksinspect C core shares.
 *
 * A harness is one file tests/fuzz/fuzz_<name>.c that includes this header
 * and defines LLVMFuzzerTestOneInput; tools/fuzz.py builds it against the
 * csrc/ sources with -fsanitize=fuzzer,address,undefined (see README.md here).
 *
 * Two helpers:
 *   - fz_reader: takes integers from the fuzzer's bytes (zeros once they run out);
 *   - fz_image: a ksi_phys (image bytes + run table + optional read callback),
 *     a CR3, a paging mode and a configuration, all decoded from the input in
 *     the layout below. tests/fuzz/make_corpus.py writes seeds in the same
 *     layout from tests/builders/pagetable_builder.py, so the two must agree.
 *
 * Walker input layout (little-endian, FZ_HEADER_SIZE bytes, then the image):
 *     0  u64 cr3
 *     8  u8  mode        0-3: the ksi_paging_mode; 4 and 5: invalid modes (4, -1)
 *     9  u8  maxphyaddr  below 0x80: 32 + value % 21; else the raw byte (0 = 52;
 *                        anything else outside 32..52 must be refused)
 *    10  u8  options     bit 0 PSE, 1 NXE, 2 WP, 3 IGNORE_RESERVED, 4 MERGE_RIGHTS
 *    11  u8  flags       bits 0-2: run count (0: one run, all of the image at
 *                        physical 0); bit 3: install the read callback;
 *                        bit 4: do not validate the run table (memory safety only)
 *    12  u32 param       harness-specific (chunk size, read length...)
 *    16  u64 pat         IA32_PAT
 *    24  4 x {u64 start, u64 length, u64 offset}   the runs (first <count> used)
 *   120  8 x u64         linear addresses for the harness
 *   184  image bytes
 *
 * Invariant failures call FZ_CHECK, which aborts: libFuzzer reports them as
 * crashes with the input that broke them.
 */
#ifndef KSI_FUZZ_COMMON_H
#define KSI_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ksinspect.h"

#define FZ_CHECK(cond)                                                                  \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            abort();                                                                    \
        }                                                                               \
    } while (0)

/* --- integers from the input ------------------------------------------------ */

typedef struct {
    const uint8_t *data;
    size_t size;
    size_t pos;
} fz_reader;

static inline fz_reader fz_reader_of(const uint8_t *data, size_t size)
{
    fz_reader r = {data, size, 0};
    return r;
}

static inline uint64_t fz_take(fz_reader *r, unsigned bytes)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes; i++) {
        uint64_t b = r->pos < r->size ? r->data[r->pos] : 0;
        if (r->pos < r->size)
            r->pos++;
        v |= b << (8 * i);
    }
    return v;
}

static inline uint64_t fz_u64(fz_reader *r) { return fz_take(r, 8); }
static inline uint32_t fz_u32(fz_reader *r) { return (uint32_t)fz_take(r, 4); }
static inline uint16_t fz_u16(fz_reader *r) { return (uint16_t)fz_take(r, 2); }
static inline uint8_t fz_u8(fz_reader *r) { return (uint8_t)fz_take(r, 1); }

static inline const uint8_t *fz_rest(const fz_reader *r, size_t *len)
{
    *len = r->size - r->pos;
    return r->data + r->pos;
}

/* --- a physical-memory image from the input ----------------------------------- */

#define FZ_HEADER_SIZE 184
#define FZ_MAX_RUNS 4
#define FZ_VAS 8

enum { FZ_OPT_PSE = 1, FZ_OPT_NXE = 2, FZ_OPT_WP = 4, FZ_OPT_IGNORE_RESERVED = 8,
       FZ_OPT_MERGE_RIGHTS = 16 };
enum { FZ_FLAG_RUNS = 7, FZ_FLAG_CALLBACK = 8, FZ_FLAG_UNVALIDATED = 16 };

typedef struct {
    ksi_phys phys;
    ksi_run runs[FZ_MAX_RUNS];
    ksi_paging_config cfg;
    uint64_t cr3;
    int mode;
    int mode_valid;           /* 0..3 */
    int config_valid;         /* maxphyaddr 0 or 32..52 */
    int validated;            /* the run table passed ksi_phys_validate */
    uint32_t param;
    uint64_t vas[FZ_VAS];
    const uint8_t *image;
    size_t image_len;
} fz_image;

/* The read callback: a pure function of pa (walks read the same memory
   twice and must see the same bytes), failing for some addresses. Bytes
   come from the image, wrapped; physical addresses with bit 40 set fail. */
static inline int fz_read_callback(void *context, uint64_t pa, uint8_t *out, size_t n)
{
    const fz_image *img = (const fz_image *)context;
    if (img->image_len == 0)
        return 1;
    for (size_t i = 0; i < n; i++) {
        uint64_t at = pa + i;
        if (at & (1ULL << 40))
            return 1;
        out[i] = (uint8_t)(img->image[at % img->image_len] ^ (uint8_t)(at >> 20));
    }
    return 0;
}

static const int FZ_MODES[6] = {KSI_PAGING_32BIT, KSI_PAGING_PAE, KSI_PAGING_4LEVEL,
                                KSI_PAGING_5LEVEL, 4, -1};

/* Decode the header; 0 when the input should be skipped (an invalid run
   table, unless the input asks to keep it). */
static inline int fz_image_of(const uint8_t *data, size_t size, fz_image *img)
{
    fz_reader r = fz_reader_of(data, size);
    unsigned maxphy, options, flags, count;

    memset(img, 0, sizeof *img);
    img->cr3 = fz_u64(&r);
    img->mode = FZ_MODES[fz_u8(&r) % 6];
    img->mode_valid = img->mode >= 0 && img->mode <= 3;
    maxphy = fz_u8(&r);
    img->cfg.maxphyaddr = maxphy < 0x80 ? 32 + maxphy % 21 : maxphy;
    img->config_valid = img->cfg.maxphyaddr == 0
                        || (img->cfg.maxphyaddr >= 32 && img->cfg.maxphyaddr <= 52);
    options = fz_u8(&r);
    img->cfg.options = ((options & FZ_OPT_PSE) ? KSI_PO_PSE : 0)
                       | ((options & FZ_OPT_NXE) ? KSI_PO_NXE : 0)
                       | ((options & FZ_OPT_WP) ? KSI_PO_WP : 0)
                       | ((options & FZ_OPT_IGNORE_RESERVED) ? KSI_WO_IGNORE_RESERVED : 0)
                       | ((options & FZ_OPT_MERGE_RIGHTS) ? KSI_WO_MERGE_RIGHTS : 0);
    flags = fz_u8(&r);
    img->param = fz_u32(&r);
    img->cfg.pat_msr = fz_u64(&r);
    count = flags & FZ_FLAG_RUNS;
    if (count > FZ_MAX_RUNS)
        count = FZ_MAX_RUNS;
    for (unsigned i = 0; i < FZ_MAX_RUNS; i++) {
        img->runs[i].start = fz_u64(&r);
        img->runs[i].length = fz_u64(&r);
        img->runs[i].offset = fz_u64(&r);
    }
    for (unsigned i = 0; i < FZ_VAS; i++)
        img->vas[i] = fz_u64(&r);
    img->image = fz_rest(&r, &img->image_len);

    if (count == 0) {
        count = img->image_len ? 1 : 0;
        img->runs[0].start = 0;
        img->runs[0].length = img->image_len;
        img->runs[0].offset = 0;
    }
    img->phys.base = img->image;
    img->phys.base_length = img->image_len;
    img->phys.runs = img->runs;
    img->phys.run_count = count;
    if (flags & FZ_FLAG_CALLBACK) {
        img->phys.read = fz_read_callback;
        img->phys.read_context = img;
    }
    img->validated = ksi_phys_validate(&img->phys) == KSI_OK;
    if (!img->validated && !(flags & FZ_FLAG_UNVALIDATED))
        return 0;
    return 1;
}

/* Valid page sizes of a paging mode (SDM 4.3-4.5). */
static inline int fz_page_size_ok(int mode, uint64_t size)
{
    switch (mode) {
    case KSI_PAGING_32BIT: return size == 4096 || size == (4ULL << 20);
    case KSI_PAGING_PAE: return size == 4096 || size == (2ULL << 20);
    default: return size == 4096 || size == (2ULL << 20) || size == (1ULL << 30);
    }
}

/* The walk of va with a fresh, uncached walker: the reference the batch,
   enumeration and read paths are checked against. */
static inline ksi_translation fz_translate(const fz_image *img, uint64_t va)
{
    ksi_translation t;
    int rc = ksi_translate(&img->phys, img->cr3, img->mode, &img->cfg, va, &t);
    FZ_CHECK(rc == KSI_OK);
    return t;
}

#endif
