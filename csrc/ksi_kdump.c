/*
 * ksi_kdump.c - the kdump page index (bitmap rank), the flattened-format
 * record scan and an LZO1X decompressor. See ksi_kdump.h.
 *
 * The LZO1X decoder follows the stream format as the Linux kernel documents
 * it (Documentation/staging/lzo.rst): instructions whose meaning depends on
 * how many literals the previous one copied ("state"), lengths extended by
 * runs of zero bytes, and an end marker that is a far copy of distance
 * 16384. Every input byte is read after a bounds check and every output
 * byte is written after a capacity check.
 */
#include "ksi_kdump.h"

#include <string.h>

#define RANK_WORDS (KSI_KDUMP_RANK_BITS / 64)

static uint64_t load_word(const uint8_t *bitmap, uint64_t bitmap_bytes, uint64_t word)
{
    /* Little-endian word `word` of the bitmap; bytes past the end read 0. */
    uint64_t v = 0;
    uint64_t at = word * 8;
    for (unsigned i = 0; i < 8; i++) {
        if (at + i < bitmap_bytes)
            v |= (uint64_t)bitmap[at + i] << (8 * i);
    }
    return v;
}

static unsigned popcount64(uint64_t v)
{
    return (unsigned)__builtin_popcountll(v);
}

uint64_t ksi_kdump_rank_entries(uint64_t bitmap_bytes)
{
    uint64_t bytes_per_entry = KSI_KDUMP_RANK_BITS / 8;
    return bitmap_bytes / bytes_per_entry + (bitmap_bytes % bytes_per_entry ? 1 : 0);
}

int ksi_kdump_build_ranks(const uint8_t *bitmap, uint64_t bitmap_bytes, uint64_t *ranks,
                          uint64_t nranks, uint64_t *total)
{
    if ((!bitmap && bitmap_bytes) || (!ranks && nranks) || !total)
        return KSI_ERR_NULL_POINTER;
    if (nranks != ksi_kdump_rank_entries(bitmap_bytes))
        return KSI_ERR_BAD_ARGUMENT;
    uint64_t sum = 0;
    uint64_t words = bitmap_bytes / 8 + (bitmap_bytes % 8 ? 1 : 0);
    for (uint64_t w = 0; w < words; w++) {
        if (w % RANK_WORDS == 0)
            ranks[w / RANK_WORDS] = sum;
        sum += popcount64(load_word(bitmap, bitmap_bytes, w));
    }
    *total = sum;
    return KSI_OK;
}

int ksi_kdump_lookup(const uint8_t *bitmap, uint64_t bitmap_bytes, const uint64_t *ranks,
                     uint64_t nranks, const uint64_t *pfns, size_t count, uint64_t *index,
                     uint8_t *found)
{
    if ((!bitmap && bitmap_bytes) || (!ranks && nranks) || (count && (!pfns || !index || !found)))
        return KSI_ERR_NULL_POINTER;
    if (nranks != ksi_kdump_rank_entries(bitmap_bytes))
        return KSI_ERR_BAD_ARGUMENT;
    if (bitmap_bytes > UINT64_MAX / 8)
        return KSI_ERR_OUT_OF_RANGE;
    uint64_t bits = bitmap_bytes * 8;
    for (size_t i = 0; i < count; i++) {
        uint64_t pfn = pfns[i];
        index[i] = 0;
        found[i] = 0;
        if (pfn >= bits)
            continue;
        if (!(bitmap[pfn / 8] >> (pfn % 8) & 1))
            continue;
        uint64_t word = pfn / 64;
        uint64_t rank = ranks[pfn / KSI_KDUMP_RANK_BITS];
        for (uint64_t w = (pfn / KSI_KDUMP_RANK_BITS) * RANK_WORDS; w < word; w++)
            rank += popcount64(load_word(bitmap, bitmap_bytes, w));
        uint64_t below = load_word(bitmap, bitmap_bytes, word) & ((1ULL << (pfn % 64)) - 1);
        index[i] = rank + popcount64(below);
        found[i] = 1;
    }
    return KSI_OK;
}

int ksi_kdump_runs(const uint8_t *bitmap, uint64_t bitmap_bytes, uint64_t *next_pfn,
                   uint64_t *starts, uint64_t *lengths, size_t capacity, size_t *count)
{
    if ((!bitmap && bitmap_bytes) || !next_pfn || !count || (capacity && (!starts || !lengths)))
        return KSI_ERR_NULL_POINTER;
    if (bitmap_bytes > UINT64_MAX / 8)
        return KSI_ERR_OUT_OF_RANGE;
    uint64_t bits = bitmap_bytes * 8;
    uint64_t pfn = *next_pfn;
    size_t n = 0;
    while (pfn < bits && n < capacity) {
        /* Skip clear bits a word at a time. */
        uint64_t word = load_word(bitmap, bitmap_bytes, pfn / 64) >> (pfn % 64);
        if (!word) {
            pfn = (pfn / 64 + 1) * 64;
            continue;
        }
        pfn += (uint64_t)__builtin_ctzll(word);
        if (pfn >= bits)
            break;
        uint64_t start = pfn;
        for (;;) {
            uint64_t w = ~load_word(bitmap, bitmap_bytes, pfn / 64) >> (pfn % 64);
            if (w) {
                pfn += (uint64_t)__builtin_ctzll(w);
                break;
            }
            pfn = (pfn / 64 + 1) * 64;
            if (pfn >= bits)
                break;
        }
        if (pfn > bits)
            pfn = bits;
        starts[n] = start;
        lengths[n] = pfn - start;
        n++;
    }
    if (pfn > bits)
        pfn = bits;
    *next_pfn = pfn;
    *count = n;
    return KSI_OK;
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

int ksi_kdump_flat_scan(const uint8_t *buf, uint64_t length, ksi_flat_cursor *cursor,
                        ksi_flat_record *out, size_t capacity, size_t *count)
{
    if ((!buf && length) || !cursor || !count || (capacity && !out))
        return KSI_ERR_NULL_POINTER;
    size_t n = 0;
    *count = 0;
    uint64_t pos = cursor->position;
    while (!cursor->done && n < capacity) {
        if (pos > length || length - pos < 16)
            return KSI_ERR_TRUNCATED;
        uint64_t offset = be64(buf + pos), size = be64(buf + pos + 8);
        if (offset == UINT64_MAX && size == UINT64_MAX) {
            cursor->done = 1;
            pos += 16;
            break;
        }
        if (offset >> 63 || size >> 63 || offset + size < offset || (offset + size) >> 63)
            return KSI_ERR_OUT_OF_RANGE;
        if (size > length - pos - 16)
            return KSI_ERR_TRUNCATED;
        out[n].offset = offset;
        out[n].size = size;
        out[n].data = pos + 16;
        n++;
        pos += 16 + size;
        cursor->position = pos;
        cursor->records++;
        *count = n;
    }
    cursor->position = pos;
    *count = n;
    return KSI_OK;
}

/* -- LZO1X -------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *ip, *ie;
    uint8_t *op, *ob, *oe;   /* output position, start, end */
} lzo_state;

/* A length of `bits` low bits; 0 means "mask + 255 * zero bytes + next byte". */
static int lzo_length(lzo_state *s, size_t low, size_t mask, size_t *length)
{
    if (low) {
        *length = low;
        return KSI_OK;
    }
    size_t zeros = 0;
    size_t room = (size_t)(s->oe - s->op);
    for (;;) {
        if (s->ip >= s->ie)
            return KSI_ERR_TRUNCATED;
        if (*s->ip)
            break;
        s->ip++;
        zeros++;
        if (zeros > room / 255 + 1)          /* longer than the output can take */
            return KSI_ERR_CAPACITY;
    }
    *length = mask + 255 * zeros + *s->ip++;
    return KSI_OK;
}

/* The 16-bit little-endian operand of the 16..63 instructions: distance and state. */
static int lzo_le16(lzo_state *s, size_t *value)
{
    if (s->ie - s->ip < 2)
        return KSI_ERR_TRUNCATED;
    *value = (size_t)s->ip[0] | (size_t)s->ip[1] << 8;
    s->ip += 2;
    return KSI_OK;
}

static int lzo_literals(lzo_state *s, size_t n)
{
    if ((size_t)(s->ie - s->ip) < n)
        return KSI_ERR_TRUNCATED;
    if ((size_t)(s->oe - s->op) < n)
        return KSI_ERR_CAPACITY;
    for (size_t i = 0; i < n; i++)
        *s->op++ = *s->ip++;
    return KSI_OK;
}

static int lzo_match(lzo_state *s, size_t distance, size_t length)
{
    if (distance == 0 || distance > (size_t)(s->op - s->ob))
        return KSI_ERR_OUT_OF_RANGE;
    if ((size_t)(s->oe - s->op) < length)
        return KSI_ERR_CAPACITY;
    const uint8_t *from = s->op - distance;
    for (size_t i = 0; i < length; i++)   /* byte by byte: source and target may overlap */
        *s->op++ = from[i];
    return KSI_OK;
}

int ksi_lzo1x_decompress(const uint8_t *src, size_t src_length, uint8_t *dst,
                         size_t dst_capacity, size_t *out_length)
{
    if (!out_length || (!src && src_length) || (!dst && dst_capacity))
        return KSI_ERR_NULL_POINTER;
    *out_length = 0;
    if (src_length == 0)
        return KSI_ERR_TRUNCATED;
    lzo_state s = {src, src + src_length, dst, dst, dst + dst_capacity};
    int st;
    unsigned state = 0;       /* literals the last instruction copied: 0, 1-3, or 4 for 4+ */
    if (*s.ip > 17) {         /* first byte: a literal run of byte - 17 */
        size_t t = (size_t)(*s.ip++ - 17);
        if ((st = lzo_literals(&s, t)))
            return st;
        state = t < 4 ? (unsigned)t : 4;
    }
    for (;;) {
        if (s.ip >= s.ie)
            return KSI_ERR_TRUNCATED;
        unsigned inst = *s.ip++;
        size_t length, distance;
        unsigned next;
        if (inst < 16) {
            if (state == 0) {             /* a literal run of 4 or more */
                if ((st = lzo_length(&s, inst & 15, 15, &length)))
                    return st;
                if ((st = lzo_literals(&s, length + 3)))
                    return st;
                state = 4;
                continue;
            }
            if (s.ip >= s.ie)
                return KSI_ERR_TRUNCATED;
            size_t h = *s.ip++;
            distance = (h << 2) + ((inst >> 2) & 3) + (state == 4 ? 2049 : 1);
            length = state == 4 ? 3 : 2;
            next = inst & 3;
        } else if (inst < 32) {          /* far copy: 16..48 KiB back; distance 16384 ends */
            if ((st = lzo_length(&s, inst & 7, 7, &length)))
                return st;
            length += 2;
            size_t le;
            if ((st = lzo_le16(&s, &le)))
                return st;
            distance = 16384 + ((size_t)(inst & 8) << 11) + (le >> 2);
            next = le & 3;
            if (distance == 16384) {
                *out_length = (size_t)(s.op - s.ob);
                return s.ip == s.ie ? KSI_OK : KSI_ERR_BAD_ARGUMENT;
            }
        } else if (inst < 64) {          /* copy within 16 KiB */
            if ((st = lzo_length(&s, inst & 31, 31, &length)))
                return st;
            length += 2;
            size_t le;
            if ((st = lzo_le16(&s, &le)))
                return st;
            distance = (le >> 2) + 1;
            next = le & 3;
        } else {                          /* 3-8 bytes within 2 KiB */
            if (s.ip >= s.ie)
                return KSI_ERR_TRUNCATED;
            size_t h = *s.ip++;
            length = inst < 128 ? 3 + ((inst >> 5) & 1) : 5 + ((inst >> 5) & 3);
            distance = (h << 3) + ((inst >> 2) & 7) + 1;
            next = inst & 3;
        }
        if ((st = lzo_match(&s, distance, length)))
            return st;
        if ((st = lzo_literals(&s, next)))
            return st;
        state = next;
    }
}

/* -- snappy ------------------------------------------------------------------------- */

/* The raw format as Google's format_description.txt gives it: a varint of the
   uncompressed length, then elements whose tag's low two bits say literal
   (00), copy with a 1-byte offset (01), 2-byte (10) or 4-byte (11). */
int ksi_snappy_decompress(const uint8_t *src, size_t src_length, uint8_t *dst,
                          size_t dst_capacity, size_t *out_length)
{
    if ((!src && src_length) || (!dst && dst_capacity) || !out_length)
        return KSI_ERR_NULL_POINTER;
    *out_length = 0;
    size_t ip = 0, op = 0;
    uint64_t expected = 0;
    for (unsigned shift = 0;; shift += 7) {
        if (ip >= src_length)
            return KSI_ERR_TRUNCATED;
        if (shift > 28)
            return KSI_ERR_BAD_ARGUMENT;          /* a varint of more than 5 bytes */
        uint8_t b = src[ip++];
        expected |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80))
            break;
    }
    if (expected > dst_capacity)
        return KSI_ERR_CAPACITY;
    while (ip < src_length) {
        uint8_t tag = src[ip++];
        size_t length, offset;
        if ((tag & 3) == 0) {
            length = (size_t)(tag >> 2) + 1;
            if (length > 60) {
                size_t extra = length - 60;       /* 1..4 little-endian bytes */
                if (src_length - ip < extra)
                    return KSI_ERR_TRUNCATED;
                length = 0;
                for (size_t i = 0; i < extra; i++)
                    length |= (size_t)src[ip + i] << (8 * i);
                ip += extra;
                if (length == SIZE_MAX)
                    return KSI_ERR_CAPACITY;
                length += 1;
            }
            if (src_length - ip < length)
                return KSI_ERR_TRUNCATED;
            if (dst_capacity - op < length)
                return KSI_ERR_CAPACITY;
            memcpy(dst + op, src + ip, length);
            ip += length;
            op += length;
            continue;
        }
        if ((tag & 3) == 1) {
            if (ip >= src_length)
                return KSI_ERR_TRUNCATED;
            length = (size_t)((tag >> 2) & 7) + 4;
            offset = (size_t)(tag >> 5) << 8 | src[ip++];
        } else {
            size_t width = (tag & 3) == 2 ? 2 : 4;
            if (src_length - ip < width)
                return KSI_ERR_TRUNCATED;
            length = (size_t)(tag >> 2) + 1;
            offset = 0;
            for (size_t i = 0; i < width; i++)
                offset |= (size_t)src[ip + i] << (8 * i);
            ip += width;
        }
        if (offset == 0 || offset > op)
            return KSI_ERR_OUT_OF_RANGE;
        if (dst_capacity - op < length)
            return KSI_ERR_CAPACITY;
        if (offset == 1) {
            memset(dst + op, dst[op - 1], length);
            op += length;
        } else {
            /* A copy that overlaps its own output repeats a period of `offset` bytes:
               copied `offset` bytes at a time, each piece a disjoint memcpy. */
            while (length) {
                size_t piece = length < offset ? length : offset;
                memcpy(dst + op, dst + op - offset, piece);
                op += piece;
                length -= piece;
            }
        }
    }
    if (op != expected)
        return KSI_ERR_BAD_ARGUMENT;
    *out_length = op;
    return KSI_OK;
}

/* -- the page reader ------------------------------------------------------------------ */

#define NO_SLOT UINT32_MAX
#define NO_PFN UINT64_MAX        /* a slot that holds no page (pfn < 2^52 always) */
#define KINDS (KSI_KDUMP_ZLIB | KSI_KDUMP_LZO | KSI_KDUMP_SNAPPY | KSI_KDUMP_ZSTD)

static int block_shift_of(uint32_t block_size)
{
    if (block_size < 512 || block_size > (1u << 20) || (block_size & (block_size - 1)))
        return -1;
    return __builtin_ctz(block_size);
}

static uint32_t bucket_count(uint32_t slots)
{
    uint32_t n = 1;
    while (n < 2 * slots)
        n <<= 1;
    return n;
}

uint64_t ksi_kdump_cache_bytes(uint32_t slots, uint32_t block_size)
{
    if (slots == 0 || slots > KSI_KDUMP_MAX_CACHE_PAGES || block_shift_of(block_size) < 0)
        return 0;
    uint64_t s = slots;
    /* slot_pfn, pages, scratch (8-byte aligned: block_size is), then 3 uint32 arrays
       per slot and the buckets. */
    return 8 * s + s * block_size + block_size + 12 * s + 4 * (uint64_t)bucket_count(slots);
}

int ksi_kdump_reader_init(ksi_kdump_reader *r, uint8_t *arena, uint64_t arena_length,
                          uint32_t slots)
{
    if (!r || !arena || (!r->file && r->file_length) || (!r->bitmap && r->bitmap_bytes)
        || (!r->ranks && r->nranks) || (!r->extents && r->extent_count))
        return KSI_ERR_NULL_POINTER;
    int shift = block_shift_of(r->block_size);
    uint64_t need = ksi_kdump_cache_bytes(slots, r->block_size);
    if (shift < 0 || r->nranks != ksi_kdump_rank_entries(r->bitmap_bytes)
        || r->bitmap_bytes > UINT64_MAX / 8)
        return KSI_ERR_BAD_ARGUMENT;
    if (!need || arena_length != need)
        return KSI_ERR_CAPACITY;
    if (r->extents) {
        uint64_t last_end = 0;
        for (uint64_t i = 0; i < r->extent_count; i++) {
            uint64_t start = r->extents[3 * i], end = r->extents[3 * i + 1];
            uint64_t data = r->extents[3 * i + 2];
            if (start >= end || start < last_end || data > r->file_length
                || end - start > r->file_length - data)
                return KSI_ERR_BAD_ARGUMENT;
            last_end = end;
        }
        if (r->plain_size > last_end)
            return KSI_ERR_BAD_ARGUMENT;
    } else if (r->plain_size > r->file_length) {
        return KSI_ERR_BAD_ARGUMENT;
    }
    uint64_t s = slots;
    r->slot_pfn = (uint64_t *)(void *)arena;
    r->pages = arena + 8 * s;
    r->scratch = r->pages + s * r->block_size;
    r->slot_next = (uint32_t *)(void *)(r->scratch + r->block_size);
    r->lru_prev = r->slot_next + s;
    r->lru_next = r->lru_prev + s;
    r->buckets = r->lru_next + s;
    r->slots = slots;
    r->bucket_mask = bucket_count(slots) - 1;
    r->block_shift = (uint32_t)shift;
    r->busy = 0;
    r->error = KSI_KDUMP_PAGE_OK;
    r->error_pfn = 0;
    r->hits = r->misses = r->decompressed = 0;
    ksi_kdump_reader_clear(r);
    return KSI_OK;
}

void ksi_kdump_reader_clear(ksi_kdump_reader *r)
{
    if (!r || !r->buckets)
        return;
    for (uint32_t b = 0; b <= r->bucket_mask; b++)
        r->buckets[b] = NO_SLOT;
    r->used = 0;
    r->lru_head = r->lru_tail = NO_SLOT;
}

static uint32_t bucket_of(const ksi_kdump_reader *r, uint64_t pfn)
{
    return (uint32_t)((pfn * 0x9E3779B97F4A7C15ULL) >> 32) & r->bucket_mask;
}

static uint32_t cache_find(const ksi_kdump_reader *r, uint64_t pfn)
{
    for (uint32_t s = r->buckets[bucket_of(r, pfn)]; s != NO_SLOT; s = r->slot_next[s])
        if (r->slot_pfn[s] == pfn)
            return s;
    return NO_SLOT;
}

static void lru_unlink(ksi_kdump_reader *r, uint32_t s)
{
    uint32_t p = r->lru_prev[s], n = r->lru_next[s];
    if (p != NO_SLOT)
        r->lru_next[p] = n;
    else
        r->lru_head = n;
    if (n != NO_SLOT)
        r->lru_prev[n] = p;
    else
        r->lru_tail = p;
}

static void lru_push_front(ksi_kdump_reader *r, uint32_t s)
{
    r->lru_prev[s] = NO_SLOT;
    r->lru_next[s] = r->lru_head;
    if (r->lru_head != NO_SLOT)
        r->lru_prev[r->lru_head] = s;
    r->lru_head = s;
    if (r->lru_tail == NO_SLOT)
        r->lru_tail = s;
}

static void lru_push_back(ksi_kdump_reader *r, uint32_t s)
{
    r->lru_next[s] = NO_SLOT;
    r->lru_prev[s] = r->lru_tail;
    if (r->lru_tail != NO_SLOT)
        r->lru_next[r->lru_tail] = s;
    r->lru_tail = s;
    if (r->lru_head == NO_SLOT)
        r->lru_head = s;
}

/* A slot for a new page: a never-used one, else the least recently used one,
   taken out of its bucket chain and the LRU list. */
static uint32_t cache_take(ksi_kdump_reader *r)
{
    uint32_t s;
    if (r->used < r->slots) {
        s = r->used++;
    } else {
        s = r->lru_tail;
        lru_unlink(r, s);
        if (r->slot_pfn[s] != NO_PFN) {
            uint32_t *link = &r->buckets[bucket_of(r, r->slot_pfn[s])];
            while (*link != NO_SLOT && *link != s)
                link = &r->slot_next[*link];
            if (*link == s)
                *link = r->slot_next[s];
        }
    }
    r->slot_pfn[s] = NO_PFN;
    r->slot_next[s] = NO_SLOT;
    return s;
}

/* Bytes [offset, offset + n) of the plain file: a pointer into the mapping, or
   (for a range across flattened records) a copy in buf with gaps as zeros;
   NULL when the range runs past the plain file. n <= the size of buf. */
static const uint8_t *plain_bytes(const ksi_kdump_reader *r, uint64_t offset, uint64_t n,
                                  uint8_t *buf)
{
    if (offset > r->plain_size || n > r->plain_size - offset)
        return NULL;
    if (!r->extents)
        return r->file + offset;
    /* The last extent starting at or before offset. */
    uint64_t lo = 0, hi = r->extent_count;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (r->extents[3 * mid] <= offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    uint64_t i = lo ? lo - 1 : 0;
    const uint64_t *e = r->extents + 3 * i;
    if (r->extent_count && e[0] <= offset && offset < e[1] && n <= e[1] - offset)
        return r->file + e[2] + (offset - e[0]);
    uint64_t at = offset, end = offset + n;
    while (at < end) {
        while (i < r->extent_count && r->extents[3 * i + 1] <= at)
            i++;
        e = r->extents + 3 * i;
        if (i >= r->extent_count || e[0] >= end) {
            memset(buf + (at - offset), 0, (size_t)(end - at));
            break;
        }
        if (e[0] > at) {
            memset(buf + (at - offset), 0, (size_t)(e[0] - at));
            at = e[0];
        }
        uint64_t take = (e[1] < end ? e[1] : end) - at;
        memcpy(buf + (at - offset), r->file + e[2] + (at - e[0]), (size_t)take);
        at += take;
    }
    return buf;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static int decode(ksi_kdump_reader *r, uint32_t kind, const uint8_t *src, uint32_t size,
                  uint8_t *dst)
{
    size_t block = r->block_size, got = 0;
    int status;
    if (kind == KSI_KDUMP_LZO) {
        status = ksi_lzo1x_decompress(src, size, dst, block, &got);
    } else if (kind == KSI_KDUMP_SNAPPY) {
        status = ksi_snappy_decompress(src, size, dst, block, &got);
    } else if (kind == KSI_KDUMP_ZLIB && r->zlib_uncompress) {
        unsigned long length = (unsigned long)block;
        status = r->zlib_uncompress(dst, &length, src, size) == 0 ? KSI_OK : KSI_ERR_CAPACITY;
        got = (size_t)length;
    } else if (kind == KSI_KDUMP_ZSTD && r->zstd_decompress && r->zstd_dctx && r->zstd_is_error) {
        size_t n = r->zstd_decompress(r->zstd_dctx, dst, block, src, size);
        status = r->zstd_is_error(n) ? KSI_ERR_CAPACITY : KSI_OK;
        got = status ? 0 : n;
    } else if (r->decompress) {
        status = r->decompress(r->decompress_context, kind, src, size, dst, block, &got)
                 ? KSI_ERR_CAPACITY : KSI_OK;
    } else {
        return KSI_KDUMP_PAGE_NO_DECOMPRESSOR;
    }
    return status == KSI_OK && got == block ? KSI_KDUMP_PAGE_OK : KSI_KDUMP_PAGE_DECOMPRESS;
}

/* Page pfn into dst (block_size bytes): 0, 1 when it is not dumped, 2 when it is
   broken (the first such failure is kept in reader->error). */
static int load_page(ksi_kdump_reader *r, uint64_t pfn, uint8_t *dst)
{
    uint64_t index;
    uint8_t found;
    if (ksi_kdump_lookup(r->bitmap, r->bitmap_bytes, r->ranks, r->nranks, &pfn, 1, &index,
                         &found) != KSI_OK || !found)
        return 1;
    int why = KSI_KDUMP_PAGE_OK;
    uint8_t raw[KSI_KDUMP_DESC_SIZE];
    const uint8_t *desc = NULL;
    if (index <= (UINT64_MAX - r->desc_at) / KSI_KDUMP_DESC_SIZE)
        desc = plain_bytes(r, r->desc_at + index * KSI_KDUMP_DESC_SIZE, KSI_KDUMP_DESC_SIZE,
                           raw);
    if (!desc) {
        why = KSI_KDUMP_PAGE_DESCRIPTOR;
    } else {
        uint64_t offset = le64(desc);
        uint32_t size = le32(desc + 8), flags = le32(desc + 12);
        uint32_t kind = flags & KINDS;
        const uint8_t *data;
        if (size > r->block_size || (size == 0 && flags))
            why = KSI_KDUMP_PAGE_SIZE;
        else if (!(data = plain_bytes(r, offset, size, r->scratch)))
            why = KSI_KDUMP_PAGE_DATA;
        else if (kind == 0) {
            if (size != r->block_size)
                why = KSI_KDUMP_PAGE_DECOMPRESS;
            else
                memcpy(dst, data, size);
        } else if (kind & (kind - 1))
            why = KSI_KDUMP_PAGE_FLAGS;
        else
            why = decode(r, kind, data, size, dst);
    }
    if (why == KSI_KDUMP_PAGE_OK) {
        r->decompressed++;
        return 0;
    }
    if (r->error == KSI_KDUMP_PAGE_OK) {
        r->error = (uint32_t)why;
        r->error_pfn = pfn;
    }
    return 2;
}

static void lock(ksi_kdump_reader *r)
{
    while (__atomic_exchange_n(&r->busy, 1, __ATOMIC_ACQUIRE))
        ;
}

static void unlock(ksi_kdump_reader *r)
{
    __atomic_store_n(&r->busy, 0, __ATOMIC_RELEASE);
}

int ksi_kdump_read(ksi_kdump_reader *r, uint64_t pa, uint8_t *out, size_t n, size_t *done)
{
    if (!r || (!out && n) || !done)
        return KSI_ERR_NULL_POINTER;
    *done = 0;
    if (!r->buckets)
        return KSI_ERR_BAD_ARGUMENT;              /* not initialised */
    int status = KSI_OK;
    size_t copied = 0;
    uint64_t mask = (uint64_t)r->block_size - 1;
    lock(r);
    while (copied < n) {
        uint64_t at = pa + copied;
        if (at < pa) {
            status = KSI_ERR_OUT_OF_RANGE;        /* past the top of the physical space */
            break;
        }
        uint64_t pfn = at >> r->block_shift;
        size_t into = (size_t)(at & mask);
        size_t take = r->block_size - into;
        if (take > n - copied)
            take = n - copied;
        uint32_t s = cache_find(r, pfn);
        if (s != NO_SLOT) {
            r->hits++;
            if (r->lru_head != s) {
                lru_unlink(r, s);
                lru_push_front(r, s);
            }
            memcpy(out + copied, r->pages + (uint64_t)s * r->block_size + into, take);
            copied += take;
            continue;
        }
        r->misses++;
        int got;
        if (take == r->block_size) {              /* a whole page: straight into out */
            got = load_page(r, pfn, out + copied);
        } else {
            s = cache_take(r);
            uint8_t *page = r->pages + (uint64_t)s * r->block_size;
            got = load_page(r, pfn, page);
            if (got) {
                lru_push_back(r, s);              /* empty: the next to be taken */
            } else {
                r->slot_pfn[s] = pfn;
                uint32_t b = bucket_of(r, pfn);
                r->slot_next[s] = r->buckets[b];
                r->buckets[b] = s;
                lru_push_front(r, s);
                memcpy(out + copied, page + into, take);
            }
        }
        if (got) {
            status = got == 1 ? KSI_ERR_OUT_OF_RANGE : KSI_ERR_TRUNCATED;
            break;
        }
        copied += take;
    }
    unlock(r);
    *done = copied;
    return status;
}

int ksi_kdump_read_fn(void *context, uint64_t pa, uint8_t *out, size_t n)
{
    size_t done;
    return ksi_kdump_read((ksi_kdump_reader *)context, pa, out, n, &done) != KSI_OK;
}
