/* Linear reads: ksi_read_virtual over an image, CR3, mode and
   configuration taken from the input, for any address and length.
   Invariants: it copies at most n bytes; the bytes copied are the physical
   bytes their pages translate to (checked at the first byte, the last and
   each page boundary); when it stops early, the failure it reports is what
   the walk of the first missing byte says. */
#include "fuzz_common.h"

#define MAX_READ (3 * 4096 + 512)

static void check_byte(const fz_image *img, uint64_t va, uint8_t seen)
{
    ksi_translation t = fz_translate(img, va);
    uint8_t b;
    size_t done;
    FZ_CHECK(t.reason == KSI_WALK_OK);
    FZ_CHECK(ksi_phys_read(&img->phys, t.pa, &b, 1, &done) == KSI_OK && b == seen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t out[MAX_READ];
    fz_image img;
    ksi_translation failure, t;
    uint64_t va;
    size_t n, done = 12345;
    int rc;

    if (!fz_image_of(data, size, &img))
        return 0;
    va = img.vas[0];
    if (img.param & 0x10000)    /* near a page end: reads that cross pages */
        va = (va & ~0xFFFULL) | (0x1000 - (img.param & 0xFF));
    n = (img.param & 0xFFFF) % (MAX_READ + 1);
    rc = ksi_read_virtual(&img.phys, img.cr3, img.mode, &img.cfg, va, out, n, &done, &failure);
    if (!img.mode_valid || !img.config_valid) {
        FZ_CHECK(rc == (!img.mode_valid ? KSI_ERR_BAD_MODE : KSI_ERR_BAD_ARGUMENT));
        return 0;
    }
    if (n && va + (n - 1) < va) {
        /* The range wraps past the top of the 64-bit space. */
        FZ_CHECK(rc == KSI_ERR_OUT_OF_RANGE);
        return 0;
    }
    FZ_CHECK(rc == KSI_OK);
    FZ_CHECK(done <= n);
    if (!img.validated)
        return 0;
    if (done) {
        check_byte(&img, va, out[0]);
        check_byte(&img, va + done - 1, out[done - 1]);
        for (size_t off = 0x1000 - (va & 0xFFF); off < done; off += 0x1000)
            check_byte(&img, va + off, out[off]);
    }
    if (done < n) {
        t = fz_translate(&img, va + done);
        FZ_CHECK(failure.reason == t.reason && failure.va == t.va);
        if (t.reason == KSI_WALK_OK) {
            uint8_t b;
            size_t got;
            /* mapped, but its physical byte is missing */
            FZ_CHECK(failure.pa == t.pa && failure.steps == t.steps);
            FZ_CHECK(ksi_phys_read(&img.phys, t.pa, &b, 1, &got) != KSI_OK);
        }
    }
    return 0;
}
