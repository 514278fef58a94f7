/* Enumeration of mappings: ksi_mappings with its resumable cursor, over an
   image, CR3, mode and configuration taken from the input.
   The enumeration runs once with a roomy output array and again with a
   tiny one (1 to 4 rows: every call resumes from the cursor).
   Invariants: both runs give the same ranges; ranges are sorted, disjoint,
   inside [first, last]; both ends of every range translate (uncached walk)
   to what the range says; every input address that translates is inside a
   range and every one that does not is outside (nothing missed, nothing
   invented). The work cap (max_entries) keeps hostile tables bounded; a
   capped run must say so. */
#include "fuzz_common.h"

#define MAX_ROWS 8192
#define CAP 4096

typedef struct {
    ksi_mapping rows[MAX_ROWS];
    size_t count;
    int capped;
    int overflow;
    ksi_walk_cursor cursor;
} listing;

static void enumerate(const fz_image *img, uint64_t first, uint64_t last, size_t chunk,
                      uint64_t max_entries, listing *out)
{
    static ksi_mapping buf[64];
    ksi_walk_cursor *c = &out->cursor;
    unsigned calls = 0;

    memset(c, 0, sizeof *c);
    c->max_entries = max_entries;
    out->count = 0;
    out->capped = 0;
    out->overflow = 0;
    for (;;) {
        size_t n = 99;
        int rc = ksi_mappings(&img->phys, img->cr3, img->mode, &img->cfg, first, last, c, buf,
                              chunk, &n);
        FZ_CHECK(rc == KSI_OK);
        FZ_CHECK(n <= chunk);
        for (size_t i = 0; i < n; i++) {
            if (out->count == MAX_ROWS)
                out->overflow = 1;
            else
                out->rows[out->count++] = buf[i];
        }
        if (c->state & KSI_CS_DONE)
            return;
        if ((c->state & KSI_CS_CAPPED) && !(c->state & KSI_CS_PENDING)) {
            out->capped = 1;
            return;
        }
        /* Progress: a call that returns neither done nor capped filled its array. */
        FZ_CHECK(n == chunk || (c->state & KSI_CS_CAPPED));
        FZ_CHECK(++calls < 4 * MAX_ROWS);
    }
}

static int contains(const listing *l, uint64_t va)
{
    size_t lo = 0, hi = l->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (l->rows[mid].start <= va)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo > 0 && va - l->rows[lo - 1].start < l->rows[lo - 1].size;
}

static void check_range(const fz_image *img, const ksi_mapping *m, int merge_rights)
{
    ksi_translation t = fz_translate(img, m->start);
    uint32_t mask = merge_rights ? (KSI_WR_WRITABLE | KSI_WR_USER) : 7u;

    FZ_CHECK(m->size > 0 && m->pages >= 1);
    FZ_CHECK(fz_page_size_ok(img->mode, m->page_size));
    FZ_CHECK(t.reason == KSI_WALK_OK);
    FZ_CHECK(t.pa == m->pa && (t.rights & mask) == (m->rights & mask));
    if (!merge_rights)
        FZ_CHECK(t.page_size == m->page_size);
    t = fz_translate(img, m->start + (m->size - 1));
    FZ_CHECK(t.reason == KSI_WALK_OK);
    FZ_CHECK((t.rights & mask) == (m->rights & mask));
    if (!merge_rights)
        FZ_CHECK(t.pa == m->pa + (m->size - 1));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static listing whole, chunked;
    fz_image img;
    uint64_t first, last;
    size_t chunk;
    int merge_rights, rc;
    ksi_walk_cursor c;
    ksi_mapping one;
    size_t n;

    if (!fz_image_of(data, size, &img))
        return 0;
    first = img.vas[0];
    last = img.vas[1];
    if (img.param & 2) {           /* most inputs: the whole space */
        first = 0;
        last = ~0ULL;
    }
    chunk = 1 + (img.param >> 8) % 4;
    merge_rights = (img.cfg.options & KSI_WO_MERGE_RIGHTS) != 0;

    memset(&c, 0, sizeof c);
    c.max_entries = CAP;      /* a zeroed cursor has no cap */
    rc = ksi_mappings(&img.phys, img.cr3, img.mode, &img.cfg, first, last, &c, &one, 1, &n);
    if (!img.mode_valid || !img.config_valid) {
        FZ_CHECK(rc == (!img.mode_valid ? KSI_ERR_BAD_MODE : KSI_ERR_BAD_ARGUMENT));
        return 0;
    }
    if (first > last) {
        FZ_CHECK(rc == KSI_ERR_BAD_ARGUMENT);
        return 0;
    }
    FZ_CHECK(rc == KSI_OK);
    FZ_CHECK(ksi_mappings(&img.phys, img.cr3, img.mode, &img.cfg, first, last, &c, &one, 0,
                          &n) == KSI_ERR_CAPACITY);

    enumerate(&img, first, last, 64, CAP, &whole);
    if (!img.validated)
        return 0;          /* memory safety only */
    if (whole.capped) {
        FZ_CHECK(whole.cursor.entries_read >= CAP);
        return 0;
    }
    FZ_CHECK(whole.cursor.entries_read <= CAP);
    if (whole.overflow)
        return 0;
    /* Resuming after every row re-reads at most one entry per level. */
    enumerate(&img, first, last, chunk, CAP * 8 + 64, &chunked);
    FZ_CHECK(!chunked.capped && !chunked.overflow);
    FZ_CHECK(chunked.count == whole.count);
    FZ_CHECK(memcmp(chunked.rows, whole.rows, whole.count * sizeof whole.rows[0]) == 0);

    for (size_t i = 0; i < whole.count; i++) {
        const ksi_mapping *m = &whole.rows[i];
        FZ_CHECK(m->start >= first && m->start + (m->size - 1) <= last);
        FZ_CHECK(m->start + (m->size - 1) >= m->start);      /* no wrap */
        if (i)
            FZ_CHECK(whole.rows[i - 1].start + whole.rows[i - 1].size <= m->start);
        check_range(&img, m, merge_rights);
    }
    for (unsigned i = 0; i < FZ_VAS; i++) {
        uint64_t va = img.vas[i];
        ksi_translation t;
        if (va < first || va > last)
            continue;
        t = fz_translate(&img, va);
        if (t.reason == KSI_WALK_OK)
            FZ_CHECK(contains(&whole, va));
        else
            FZ_CHECK(!contains(&whole, va));
    }
    return 0;
}
