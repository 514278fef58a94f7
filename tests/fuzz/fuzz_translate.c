/* The page walker: ksi_translate, ksi_translate_many (full and brief
   records, with the per-call memo that batches of more than 8 use),
   ksi_translate_pas (bare physical addresses, also in place),
   ksi_translate_page and ksi_translate_packed (the per-call lookups) and
   ksi_paging_geometry_of, over an image, CR3, mode and configuration taken
   from the input.
   Invariants: the batch equals one uncached walk per address; every entry
   the walk says it read is in memory with that value at that index; a
   mapped address keeps its page offset and has a page size the mode has;
   the bare and page lookups say what the full walk says, and a page's
   base_offset points at the bytes ksi_phys_read reads for that page. */
#include "fuzz_common.h"

#define COUNT (FZ_VAS * 4)
#define BIG 4096

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
    FZ_CHECK((ksi_translate_packed(&img.phys, img.cr3, img.mode, &img.cfg, vas[0])
              == KSI_PACKED_ERROR) == (expected != KSI_OK));
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
    /* Bare physical addresses, into another array and in place. */
    {
        static uint64_t pas[COUNT], inplace[COUNT];
        size_t n = img.param & 1 ? COUNT : 5u;
        const uint64_t none = 0xFEEDFACECAFEBEEFULL;
        FZ_CHECK(ksi_translate_pas(&img.phys, img.cr3, img.mode, &img.cfg, vas, n, pas, none)
                 == KSI_OK);
        memcpy(inplace, vas, sizeof inplace);
        FZ_CHECK(ksi_translate_pas(&img.phys, img.cr3, img.mode, &img.cfg, inplace, n, inplace,
                                   none) == KSI_OK);
        for (size_t i = 0; i < n && img.validated; i++) {
            FZ_CHECK(pas[i] == (full[i].reason == KSI_WALK_OK ? full[i].pa : none));
            FZ_CHECK(inplace[i] == pas[i]);
        }
    }
    /* The page lookup of each address. */
    for (unsigned i = 0; i < FZ_VAS; i++) {
        ksi_translation_brief page;
        uint64_t base_offset = 0xAAAA;
        static uint8_t got[4096];
        size_t done;
        memset(&page, 0xAA, sizeof page);
        FZ_CHECK(ksi_translate_page(&img.phys, img.cr3, img.mode, &img.cfg, vas[4 * i], &page,
                                    &base_offset) == KSI_OK);
        FZ_CHECK(ksi_translate_page(&img.phys, img.cr3, img.mode, &img.cfg, vas[4 * i], &page,
                                    NULL) == KSI_ERR_NULL_POINTER);
        if (!img.validated)
            continue;
        FZ_CHECK(ksi_translate(&img.phys, img.cr3, img.mode, &img.cfg, vas[4 * i], &one)
                 == KSI_OK);
        FZ_CHECK(page.reason == one.reason && page.rights == one.rights);
        FZ_CHECK(page.fail_level == one.fail_level && page.anomalies == (uint8_t)one.anomalies);
        FZ_CHECK(page.leaf == (one.steps ? one.entry_value[one.steps - 1] : 0));
        if (one.reason != KSI_WALK_OK) {
            uint64_t packed = ksi_translate_packed(&img.phys, img.cr3, img.mode, &img.cfg,
                                                   vas[4 * i]);
            FZ_CHECK(base_offset == UINT64_MAX && page.page_shift == 0);
            FZ_CHECK(((packed >> 9) & 7) == one.reason && ((packed >> 52) & 7) == one.fail_level);
            FZ_CHECK((packed & 0x000FFFFFFFFFF000ULL) == 0);
            continue;
        }
        FZ_CHECK(page.pa == one.pa && (1ULL << page.page_shift) == one.page_size);
        {
            uint64_t packed = ksi_translate_packed(&img.phys, img.cr3, img.mode, &img.cfg,
                                                   vas[4 * i]);
            static const uint64_t SIZES[4] = {1ULL << 12, 1ULL << 21, 1ULL << 22, 1ULL << 30};
            FZ_CHECK((packed & 0x000FFFFFFFFFF000ULL) == (one.pa & ~4095ULL));
            FZ_CHECK(SIZES[packed & 3] == one.page_size);
            FZ_CHECK(((packed >> 2) & 7) == one.rights && ((packed >> 9) & 7) == 0);
            FZ_CHECK(((packed >> 5) & 15) == (one.anomalies & 15));
        }
        if (base_offset != UINT64_MAX) {
            FZ_CHECK(base_offset <= img.phys.base_length
                     && img.phys.base_length - base_offset >= 4096);
            FZ_CHECK(ksi_phys_read(&img.phys, page.pa & ~4095ULL, got, 4096, &done) == KSI_OK);
            FZ_CHECK(memcmp(got, img.phys.base + base_offset, 4096) == 0);
        }
    }
    /* The mode table the walker uses. */
    {
        ksi_paging_geometry g;
        FZ_CHECK(ksi_paging_geometry_of(img.mode, &g) == KSI_OK);
        FZ_CHECK(g.levels == (uint32_t)ksi_paging_levels(img.mode));
        FZ_CHECK(ksi_paging_geometry_of(img.mode, NULL) == KSI_ERR_NULL_POINTER);
        FZ_CHECK(ksi_paging_geometry_of((int)img.param, &g) ==
                 (img.param <= KSI_PAGING_5LEVEL ? KSI_OK : KSI_ERR_BAD_MODE));
    }
    /* A large batch (its memo is wider at level 2: sized to the batch) says
       what the small one said, address by address (half the inputs: it is slow). */
    if (img.param & 2) {
        static uint64_t big[BIG], big_pas[BIG];
        const uint64_t none = 0xFEEDFACECAFEBEEFULL;
        for (unsigned i = 0; i < BIG; i++)
            big[i] = vas[i % COUNT] ^ ((uint64_t)(i / COUNT) << (21 + img.param % 9));
        FZ_CHECK(ksi_translate_pas(&img.phys, img.cr3, img.mode, &img.cfg, big, BIG, big_pas,
                                   none) == KSI_OK);
        for (unsigned i = 0; i < BIG && img.validated; i += 61) {
            FZ_CHECK(ksi_translate(&img.phys, img.cr3, img.mode, &img.cfg, big[i], &one)
                     == KSI_OK);
            FZ_CHECK(big_pas[i] == (one.reason == KSI_WALK_OK ? one.pa : none));
        }
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
