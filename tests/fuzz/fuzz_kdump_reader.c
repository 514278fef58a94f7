/* The kdump page reader (ksi_kdump_cache_bytes, ksi_kdump_reader_init,
   ksi_kdump_read, ksi_kdump_read_fn, ksi_kdump_reader_clear) and the snappy
   decoder (ksi_snappy_decompress). The first byte picks the case:

     even: a snappy block; byte 1 (x 64) is the output capacity. Invariants as
        for LZO in fuzz_kdump.c: the output stays within the capacity, nothing
        is written past it, a success decodes again into exactly its length and
        fails one byte shorter.
     odd: a kdump in the layout below. Invariants: every read equals a
        reference built here page by page (the descriptor read byte by byte
        through the extents, the page copied or decoded by the LZO / snappy
        decoders or the toy hook); a reader with one cache slot and one with
        many give the same bytes, done counts and statuses; the cache's LRU
        list holds exactly the used slots and each cached page is found through
        its bucket; refused geometries are refused, not read.

   Reader input (after the 2 leading bytes), little-endian:
      0 u8  slots - 1 (0..15)            1 u8 flags: bit 0 flattened, bit 1 the hook
      2 u8  block shift - 9 (0..3)       3 u8 flattened chunk (x 64, +64) 4 u8 gap
      5 u16 bitmap bytes                 7 u16 descriptor offset (plain file)
      9 8 x {u32 pa, u16 n}             57 the file (the bitmap at its start)
   The toy hook (zlib and zstd pages): data "R" + pattern decodes to the
   pattern repeated to the capacity; anything else fails. */
#include "fuzz_common.h"

#define HEAD 57
#define MAX_BLOCK 4096
#define MAX_SLOTS 16
#define MAX_EXTENTS 2048
#define READS 8

static uint8_t out1[1 << 16], out2[1 << 16], page[MAX_BLOCK];
static uint8_t got1[3 * MAX_BLOCK], got2[3 * MAX_BLOCK], want[3 * MAX_BLOCK];
static uint64_t ranks[64 * 1024 / 512 + 2];
static uint64_t extents[3 * MAX_EXTENTS];

static void snappy_case(const uint8_t *src, size_t n, uint8_t cap_byte)
{
    size_t capacity = (size_t)cap_byte * 64;
    size_t length = 12345;
    memset(out1, 0xA5, sizeof out1);
    int status = ksi_snappy_decompress(src, n, out1, capacity, &length);
    FZ_CHECK(length <= capacity);
    for (size_t i = capacity; i < capacity + 64 && i < sizeof out1; i++)
        FZ_CHECK(out1[i] == 0xA5);
    if (status != KSI_OK) {
        FZ_CHECK(length == 0);
        return;
    }
    size_t again = 0;
    FZ_CHECK(ksi_snappy_decompress(src, n, out2, length, &again) == KSI_OK);
    FZ_CHECK(again == length && memcmp(out1, out2, length) == 0);
    if (length)
        FZ_CHECK(ksi_snappy_decompress(src, n, out2, length - 1, &again) == KSI_ERR_CAPACITY);
}

static int toy_hook(void *context, uint32_t kind, const uint8_t *src, size_t length,
                    uint8_t *dst, size_t capacity, size_t *out_length)
{
    (void)context;
    FZ_CHECK(kind == KSI_KDUMP_ZLIB || kind == KSI_KDUMP_ZSTD);
    if (length < 2 || src[0] != 'R')
        return 1;
    for (size_t i = 0; i < capacity; i++)
        dst[i] = src[1 + i % (length - 1)];
    *out_length = capacity;
    return 0;
}

/* The plain-file bytes [offset, offset + n) into buf, gaps as zeros: 0 when the
   range runs past the plain file. */
static int plain_ref(const ksi_kdump_reader *r, uint64_t offset, uint64_t n, uint8_t *buf)
{
    if (offset > r->plain_size || n > r->plain_size - offset)
        return 0;
    for (uint64_t k = 0; k < n; k++) {
        uint64_t at = offset + k;
        buf[k] = 0;
        if (!r->extents) {
            buf[k] = r->file[at];
            continue;
        }
        for (uint64_t i = 0; i < r->extent_count; i++)
            if (extents[3 * i] <= at && at < extents[3 * i + 1])
                buf[k] = r->file[extents[3 * i + 2] + at - extents[3 * i]];
    }
    return 1;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The reference page: 0 and the bytes, 1 not dumped, 2 broken. */
static int page_ref(const ksi_kdump_reader *r, uint64_t pfn, uint8_t *page)
{
    static uint8_t data[MAX_BLOCK];
    uint64_t index;
    uint8_t found, desc[24];
    FZ_CHECK(ksi_kdump_lookup(r->bitmap, r->bitmap_bytes, r->ranks, r->nranks, &pfn, 1,
                              &index, &found) == KSI_OK);
    if (!found)
        return 1;
    if (!plain_ref(r, r->desc_at + index * 24, 24, desc))
        return 2;
    uint64_t offset = (uint64_t)le32(desc) | (uint64_t)le32(desc + 4) << 32;
    uint32_t size = le32(desc + 8), flags = le32(desc + 12), block = r->block_size;
    uint32_t kind = flags & (KSI_KDUMP_ZLIB | KSI_KDUMP_LZO | KSI_KDUMP_SNAPPY | KSI_KDUMP_ZSTD);
    if (size > block || (size == 0 && flags) || !plain_ref(r, offset, size, data))
        return 2;
    size_t got = 0;
    if (kind == 0) {
        if (size != block)
            return 2;
        memcpy(page, data, size);
        return 0;
    }
    if (kind == KSI_KDUMP_LZO)
        return ksi_lzo1x_decompress(data, size, page, block, &got) || got != block ? 2 : 0;
    if (kind == KSI_KDUMP_SNAPPY)
        return ksi_snappy_decompress(data, size, page, block, &got) || got != block ? 2 : 0;
    if ((kind == KSI_KDUMP_ZLIB || kind == KSI_KDUMP_ZSTD) && r->decompress)
        return toy_hook(NULL, kind, data, size, page, block, &got) || got != block ? 2 : 0;
    return 2;
}

static void check_cache(const ksi_kdump_reader *r)
{
    FZ_CHECK(r->used <= r->slots);
    uint32_t count = 0, prev = UINT32_MAX;
    for (uint32_t s = r->lru_head; s != UINT32_MAX; s = r->lru_next[s]) {
        FZ_CHECK(s < r->used && ++count <= r->used && r->lru_prev[s] == prev);
        if (r->slot_pfn[s] != UINT64_MAX) {
            uint32_t b = (uint32_t)((r->slot_pfn[s] * 0x9E3779B97F4A7C15ULL) >> 32)
                         & r->bucket_mask, hops = 0, t = r->buckets[b];
            while (t != UINT32_MAX && t != s) {
                FZ_CHECK(++hops <= r->slots);
                t = r->slot_next[t];
            }
            FZ_CHECK(t == s);
        }
        prev = s;
    }
    FZ_CHECK(count == r->used && r->lru_tail == prev);
}

static void reader_case(const uint8_t *in, size_t size)
{
    if (size < HEAD)
        return;
    fz_reader p = fz_reader_of(in, HEAD);
    uint32_t slots = 1 + fz_u8(&p) % MAX_SLOTS;
    uint8_t flags = fz_u8(&p);
    uint32_t block = 512u << (fz_u8(&p) % 4);
    uint64_t chunk = 64 * (1 + (uint64_t)fz_u8(&p)), gap = fz_u8(&p);
    uint64_t bitmap_bytes = fz_u16(&p), desc_at = fz_u16(&p);
    const uint8_t *file = in + HEAD;
    uint64_t length = size - HEAD;
    if (bitmap_bytes > length)
        bitmap_bytes = length;
    ksi_kdump_reader a, b;
    memset(&a, 0, sizeof a);
    a.file = file;
    a.file_length = length;
    a.plain_size = length;
    a.bitmap = file;
    a.bitmap_bytes = bitmap_bytes;
    a.nranks = ksi_kdump_rank_entries(bitmap_bytes);
    FZ_CHECK(a.nranks <= sizeof ranks / sizeof ranks[0]);
    uint64_t total;
    FZ_CHECK(ksi_kdump_build_ranks(file, bitmap_bytes, ranks, a.nranks, &total) == KSI_OK);
    a.ranks = ranks;
    a.desc_at = desc_at;
    a.block_size = block;
    if (flags & 2)
        a.decompress = toy_hook;
    if (flags & 1) {            /* the file's chunks in reverse order, gaps between them */
        uint64_t n = (length + chunk - 1) / chunk;
        if (n > MAX_EXTENTS)
            n = MAX_EXTENTS;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t pos = (n - 1 - i) * chunk;
            uint64_t len = length - pos < chunk ? length - pos : chunk;
            extents[3 * i] = i * (chunk + gap);
            extents[3 * i + 1] = i * (chunk + gap) + len;
            extents[3 * i + 2] = pos;
        }
        a.extents = extents;
        a.extent_count = n;
        a.plain_size = n ? extents[3 * (n - 1) + 1] : 0;
        /* The plain file starts at the last chunk: the bitmap read above is the
           start of the file either way (a geometry, not a layout, is fuzzed). */
    }
    b = a;
    uint64_t need = ksi_kdump_cache_bytes(slots, block), need1 = ksi_kdump_cache_bytes(1, block);
    FZ_CHECK(need && need1 && ksi_kdump_cache_bytes(0, block) == 0
             && ksi_kdump_cache_bytes(slots, block + 1) == 0);
    uint8_t *arena = malloc(need), *arena1 = malloc(need1);
    FZ_CHECK(ksi_kdump_reader_init(&a, arena, need - 1, slots) == KSI_ERR_CAPACITY);
    FZ_CHECK(ksi_kdump_reader_init(&a, arena, need, slots) == KSI_OK);
    FZ_CHECK(ksi_kdump_reader_init(&b, arena1, need1, 1) == KSI_OK);
    if (flags & 1 && a.extent_count > 1) {      /* unsorted extents are refused */
        ksi_kdump_reader c = a;
        uint64_t saved[3];
        memcpy(saved, extents, sizeof saved);
        memcpy(extents, extents + 3, sizeof saved);
        FZ_CHECK(ksi_kdump_reader_init(&c, arena1, need1, 1) == KSI_ERR_BAD_ARGUMENT);
        memcpy(extents, saved, sizeof saved);
    }
    for (unsigned round = 0; round < 2; round++) {
        for (unsigned i = 0; i < READS; i++) {
            uint64_t pa = fz_u32(&p);
            size_t n = fz_u16(&p) % (3 * block + 1);
            if (round)
                pa = pa % (bitmap_bytes * 8 * block + 1);
            size_t done1 = 7, done2 = 9;
            int s1 = ksi_kdump_read(&a, pa, got1, n, &done1);
            int s2 = ksi_kdump_read(&b, pa, got2, n, &done2);
            FZ_CHECK(s1 == s2 && done1 == done2 && memcmp(got1, got2, done1) == 0);
            FZ_CHECK(done1 <= n && (s1 == KSI_OK) == (done1 == n));
            FZ_CHECK(ksi_kdump_read_fn(&a, pa, got2, n) == (s1 != KSI_OK));
            /* The reference, page by page. */
            size_t at = 0;
            int why = 0;
            while (at < n) {
                uint64_t addr = pa + at, pfn = addr / block, into = addr % block;
                size_t take = block - into < n - at ? block - into : n - at;
                why = page_ref(&a, pfn, page);
                if (why)
                    break;
                memcpy(want + at, page + into, take);
                at += take;
            }
            FZ_CHECK(at == done1 && memcmp(want, got1, done1) == 0);
            if (at < n)
                FZ_CHECK(s1 == (why == 1 ? KSI_ERR_OUT_OF_RANGE : KSI_ERR_TRUNCATED));
            if (s1 == KSI_ERR_TRUNCATED)
                FZ_CHECK(a.error != KSI_KDUMP_PAGE_OK);
            check_cache(&a);
            check_cache(&b);
        }
        p = fz_reader_of(in, HEAD);
        p.pos = 9;                               /* the same reads again, wrapped in range */
        ksi_kdump_reader_clear(&b);
        FZ_CHECK(b.used == 0);
    }
    free(arena);
    free(arena1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t n = size - 2;
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, data + 2, n);
    if (data[0] % 2 == 0)
        snappy_case(copy, n, data[1]);
    else
        reader_case(copy, n);
    free(copy);
    return 0;
}
