/* The page walker: ksi_translate and ksi_translate_many (full and brief
   records, with the per-call memo that batches of more than 8 use) over an
   image, CR3, mode and configuration taken from the input.
   Invariants: the batch equals one uncached walk per address; every entry
   the walk says it read is in memory with that value at that index; a
   mapped address keeps its page offset and has a page size the mode has. */
#include "fuzz_common.h"

#define COUNT (FZ_VAS * 4)

static const unsigned SHIFT[6] = {0, 12, 21, 30, 39, 48};

static void check_walk(const fz_image *img, const ksi_translation *t)
{
    int levels = ksi_paging_levels(img->mode);
    unsigned width = img->mode == KSI_PAGING_32BIT ? 4 : 8;

    FZ_CHECK(t->steps <= levels && t->fail_level <= levels);
    FZ_CHECK(t->reason <= KSI_WALK_TOO_WIDE);
    for (unsigned i = 0; i < t->steps; i++) {
        int level = levels - (int)i;
        unsigned shift = img->mode == KSI_PAGING_32BIT && level == 2 ? 22 : SHIFT[level];
        uint64_t entries = img->mode == KSI_PAGING_32BIT ? 1024
                           : (img->mode == KSI_PAGING_PAE && level == 3 ? 4 : 512);
        uint8_t buf[8];
        size_t done;
        uint64_t v = 0;
        FZ_CHECK(t->index[i] == ((t->va >> shift) & (entries - 1)));
        FZ_CHECK(ksi_phys_read(&img->phys, t->entry_address[i], buf, width, &done) == KSI_OK);
        for (unsigned b = 0; b < width; b++)
            v |= (uint64_t)buf[b] << (8 * b);
        FZ_CHECK(v == t->entry_value[i]);
    }
    if (t->reason == KSI_WALK_OK) {
        FZ_CHECK(t->steps >= 1 && t->fail_level == 0);
        FZ_CHECK(fz_page_size_ok(img->mode, t->page_size));
        FZ_CHECK(((t->pa ^ t->va) & (t->page_size - 1)) == 0);
        FZ_CHECK(t->rights <= 7);
    } else {
        FZ_CHECK(t->page_size == 0 && t->pa == 0);
    }
    if (t->reason == KSI_WALK_NOT_PRESENT)
        FZ_CHECK(t->steps >= 1 && !(t->entry_value[t->steps - 1] & 1));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ksi_translation full[COUNT];
    static ksi_translation_brief brief[COUNT];
    static uint64_t vas[COUNT];
    fz_image img;
    ksi_translation one;
    int rc, expected;

    if (!fz_image_of(data, size, &img))
        return 0;
    /* Neighbours share upper levels: they exercise the batch's memo. */
    for (unsigned i = 0; i < FZ_VAS; i++) {
        vas[4 * i] = img.vas[i];
        vas[4 * i + 1] = img.vas[i] + 0x1000;
        vas[4 * i + 2] = img.vas[i] ^ (1ULL << (12 + img.param % 45));
        vas[4 * i + 3] = img.vas[i] + 0x200000;
    }
    expected = !img.mode_valid ? KSI_ERR_BAD_MODE
               : (!img.config_valid ? KSI_ERR_BAD_ARGUMENT : KSI_OK);
    memset(full, 0x55, sizeof full);
    rc = ksi_translate_many(&img.phys, img.cr3, img.mode, &img.cfg, vas,
                            img.param & 1 ? COUNT : 5, full, brief);
    FZ_CHECK(rc == expected);
    FZ_CHECK(ksi_translate(&img.phys, img.cr3, img.mode, &img.cfg, vas[0], &one) == expected);
    if (rc != KSI_OK)
        return 0;
    FZ_CHECK(ksi_table_root(img.cr3, img.mode) <= img.cr3);
    for (unsigned i = 0; i < (img.param & 1 ? COUNT : 5u); i++) {
        memset(&one, 0xAA, sizeof one);
        FZ_CHECK(ksi_translate(&img.phys, img.cr3, img.mode, &img.cfg, vas[i], &one) == KSI_OK);
        if (!img.validated)
            continue;     /* memory safety only: lookups in an unsorted table may differ */
        check_walk(&img, &one);
        FZ_CHECK(memcmp(&one, &full[i], sizeof one) == 0);
        FZ_CHECK(brief[i].pa == one.pa && brief[i].reason == one.reason);
        FZ_CHECK(brief[i].rights == one.rights && brief[i].fail_level == one.fail_level);
        FZ_CHECK(brief[i].anomalies == (uint8_t)one.anomalies);
        FZ_CHECK(brief[i].leaf == (one.steps ? one.entry_value[one.steps - 1] : 0));
        FZ_CHECK(one.page_size == 0 ? brief[i].page_shift == 0
                                    : (1ULL << brief[i].page_shift) == one.page_size);
    }
    /* The brief-only path (no full records) gives the same short records. */
    {
        static ksi_translation_brief again[COUNT];
        FZ_CHECK(ksi_translate_many(&img.phys, img.cr3, img.mode, &img.cfg, vas, COUNT, NULL,
                                    again) == KSI_OK);
        if (img.param & 1 && img.validated)
            FZ_CHECK(memcmp(again, brief, sizeof again) == 0);
    }
    return 0;
}
