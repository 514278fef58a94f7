/* The remembered-page table: ksi_page_cache_init / find / put / clear / move,
   driven by a sequence of operations from the input against a reference
   list of (page, record, offset). Invariants: find returns exactly what the
   last put of a page stored, and nothing for a page never put (or forgotten
   by clear); put refuses only a half-full table (count = capacity / 2) for a
   new page, and UINT64_MAX; count is the number of distinct pages; move into
   a table twice the size keeps every page; bad capacities are refused. */
#include "fuzz_common.h"

#define MAX_CAPACITY 256

typedef struct {
    uint64_t page, record, offset;
} ref_entry;

static ksi_page_slot slots[MAX_CAPACITY], bigger_slots[2 * MAX_CAPACITY];
static ref_entry ref[MAX_CAPACITY];

static void check_all(const ksi_page_cache *c, const ref_entry *r, size_t n)
{
    FZ_CHECK(c->count == n);
    for (size_t i = 0; i < n; i++) {
        const ksi_page_slot *s = ksi_page_cache_find(c, r[i].page);
        FZ_CHECK(s && s->key == r[i].page + 1);
        FZ_CHECK(s->record == r[i].record && s->offset == r[i].offset);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reader in = fz_reader_of(data, size);
    ksi_page_cache cache, bigger;
    uint64_t capacity = fz_u16(&in);
    size_t n = 0;

    /* Bad capacities: not a power of two, or below 8. */
    if (capacity < 8 || capacity > MAX_CAPACITY || (capacity & (capacity - 1))) {
        if (capacity <= MAX_CAPACITY)
            FZ_CHECK(ksi_page_cache_init(&cache, slots, capacity) == KSI_ERR_BAD_ARGUMENT);
        capacity = 8u << (capacity % 6);
    }
    FZ_CHECK(ksi_page_cache_init(NULL, slots, capacity) == KSI_ERR_NULL_POINTER);
    FZ_CHECK(ksi_page_cache_init(&cache, slots, capacity) == KSI_OK);
    /* Pages near each other (as linear addresses cluster), or anywhere. */
    while (in.pos < in.size) {
        uint8_t op = fz_u8(&in);
        uint64_t page = (op & 0x40) ? fz_u64(&in) : fz_u8(&in);
        if ((op & 0x30) == 0x30) {
            /* find */
            const ksi_page_slot *s = ksi_page_cache_find(&cache, page);
            size_t i = 0;
            while (i < n && ref[i].page != page)
                i++;
            FZ_CHECK((s != NULL) == (i < n));
        } else if ((op & 0x3F) == 0x2F) {
            ksi_page_cache_clear(&cache);
            n = 0;
        } else {
            uint64_t record = fz_u64(&in), offset = fz_u64(&in);
            size_t i = 0;
            int rc = ksi_page_cache_put(&cache, page, record, offset);
            while (i < n && ref[i].page != page)
                i++;
            if (page == UINT64_MAX) {
                FZ_CHECK(rc == KSI_ERR_BAD_ARGUMENT);
            } else if (i < n) {
                FZ_CHECK(rc == KSI_OK);
                ref[i].record = record;
                ref[i].offset = offset;
            } else if (n == capacity / 2) {
                FZ_CHECK(rc == KSI_ERR_CAPACITY);
            } else {
                FZ_CHECK(rc == KSI_OK && n < MAX_CAPACITY);
                ref[n].page = page;
                ref[n].record = record;
                ref[n].offset = offset;
                n++;
            }
        }
    }
    check_all(&cache, ref, n);
    FZ_CHECK(ksi_page_cache_find(&cache, UINT64_MAX) == NULL);
    FZ_CHECK(ksi_page_cache_init(&bigger, bigger_slots, 2 * capacity) == KSI_OK);
    FZ_CHECK(ksi_page_cache_move(&cache, &bigger) == KSI_OK);
    check_all(&bigger, ref, n);
    FZ_CHECK(ksi_page_cache_move(NULL, &bigger) == KSI_ERR_NULL_POINTER);
    return 0;
}
