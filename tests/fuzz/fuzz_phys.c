/* Physical memory: ksi_phys_validate and ksi_phys_read over any run table
   (sorted or not, inside the image or not) and read callback; plus the
   small helpers ksi_table_root, ksi_walk_reason_text, ksi_status_message.
   Invariants: a read never reports more than it was asked for; with a
   valid run table it returns exactly the bytes each run stores. */
#include "fuzz_common.h"

#define MAX_READ 8192

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t out[MAX_READ];
    fz_image img;
    uint64_t pa;
    size_t n, done = 12345;
    int rc;

    fz_image_of(data, size, &img);      /* keeps unvalidated tables too */
    pa = img.vas[0];
    if (img.param & 0x10000 && img.phys.run_count)
        pa = img.runs[img.vas[1] % img.phys.run_count].start + (img.vas[2] & 0xFFF);
    n = (img.param & 0xFFFF) % (MAX_READ + 1);
    rc = ksi_phys_read(&img.phys, pa, out, n, &done);
    FZ_CHECK(done <= n && (rc == KSI_OK) == (done == n));
    FZ_CHECK(rc == KSI_OK || rc == KSI_ERR_OUT_OF_RANGE);
    if (img.validated && !img.phys.read) {
        for (size_t i = 0; i < done; i++) {
            uint64_t at = pa + i;
            int found = 0;
            for (uint64_t j = 0; j < img.phys.run_count && !found; j++) {
                const ksi_run *run = &img.runs[j];
                if (at - run->start < run->length) {
                    FZ_CHECK(out[i] == img.image[run->offset + (at - run->start)]);
                    found = 1;
                }
            }
            FZ_CHECK(found);
        }
    }
    FZ_CHECK(ksi_phys_read(&img.phys, pa, NULL, 1, &done) == KSI_ERR_NULL_POINTER);
    for (int m = -1; m <= 4; m++)
        FZ_CHECK(ksi_table_root(img.cr3, m) <= img.cr3);
    FZ_CHECK(ksi_walk_reason_text((int)img.param) != NULL);
    FZ_CHECK(ksi_status_message((int)img.param) != NULL);
    return 0;
}
