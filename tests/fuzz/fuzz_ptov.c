/* Reverse lookup: ksi_physical_to_virtual with its resumable cursor, for a
   physical address that an input address maps to (or one from the input).
   Invariants: one roomy call sequence equals a resumed one of 1-4 rows per
   call; every page found translates (uncached walk) to a page holding the
   target; every input address that translates into the target's page is
   found (nothing missed); the work cap is honoured and reported. */
#include "fuzz_common.h"

#define MAX_ROWS 4096
#define CAP 4096

static size_t lookup(const fz_image *img, uint64_t pa, size_t chunk, uint64_t max_entries,
                     ksi_mapping *rows, int *capped)
{
    static ksi_mapping buf[64];
    ksi_walk_cursor c;
    size_t count = 0;

    memset(&c, 0, sizeof c);
    c.max_entries = max_entries;
    *capped = 0;
    for (unsigned calls = 0;; calls++) {
        size_t n = 99;
        FZ_CHECK(ksi_physical_to_virtual(&img->phys, img->cr3, img->mode, &img->cfg, pa, &c,
                                         buf, chunk, &n) == KSI_OK);
        FZ_CHECK(n <= chunk);
        for (size_t i = 0; i < n && count < MAX_ROWS; i++)
            rows[count++] = buf[i];
        if (c.state & KSI_CS_DONE)
            return count;
        if (c.state & KSI_CS_CAPPED) {
            FZ_CHECK(c.entries_read >= max_entries);
            *capped = 1;
            return count;
        }
        FZ_CHECK(n == chunk && calls < 4 * MAX_ROWS);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ksi_mapping whole[MAX_ROWS], chunked[MAX_ROWS];
    fz_image img;
    uint64_t pa;
    size_t nw, nc;
    int capped, rc;
    ksi_walk_cursor c;
    ksi_mapping one;
    size_t n;

    if (!fz_image_of(data, size, &img))
        return 0;
    memset(&c, 0, sizeof c);
    c.max_entries = CAP;      /* a zeroed cursor has no cap */
    rc = ksi_physical_to_virtual(&img.phys, img.cr3, img.mode, &img.cfg, 0, &c, &one, 1, &n);
    if (!img.mode_valid || !img.config_valid) {
        FZ_CHECK(rc == (!img.mode_valid ? KSI_ERR_BAD_MODE : KSI_ERR_BAD_ARGUMENT));
        return 0;
    }
    FZ_CHECK(rc == KSI_OK);
    pa = img.vas[1];
    if (img.param & 2) {
        ksi_translation t = fz_translate(&img, img.vas[0]);
        if (t.reason == KSI_WALK_OK)
            pa = t.pa;
    }
    nw = lookup(&img, pa, 64, CAP, whole, &capped);
    if (!img.validated || capped || nw == MAX_ROWS)
        return 0;
    nc = lookup(&img, pa, 1 + (img.param >> 8) % 4, CAP * 8 + 64, chunked, &capped);
    FZ_CHECK(!capped && nc == nw);
    FZ_CHECK(memcmp(whole, chunked, nw * sizeof whole[0]) == 0);
    for (size_t i = 0; i < nw; i++) {
        const ksi_mapping *m = &whole[i];
        ksi_translation t = fz_translate(&img, m->start);
        FZ_CHECK(fz_page_size_ok(img.mode, m->page_size) && m->size == m->page_size);
        FZ_CHECK((m->start & (m->page_size - 1)) == 0 && (m->pa & (m->page_size - 1)) == 0);
        FZ_CHECK(pa - m->pa < m->page_size);
        FZ_CHECK(t.reason == KSI_WALK_OK && t.pa == m->pa && t.page_size == m->page_size);
        FZ_CHECK(t.rights == m->rights);
        if (i)
            FZ_CHECK(whole[i - 1].start < m->start);
    }
    for (unsigned i = 0; i < FZ_VAS; i++) {
        ksi_translation t = fz_translate(&img, img.vas[i]);
        int found = 0;
        uint64_t page;
        if (t.reason != KSI_WALK_OK || pa - (t.pa & ~(t.page_size - 1)) >= t.page_size)
            continue;
        page = img.vas[i] & ~(t.page_size - 1);
        for (size_t j = 0; j < nw && !found; j++)
            found = whole[j].start == page;
        FZ_CHECK(found);
    }
    return 0;
}
