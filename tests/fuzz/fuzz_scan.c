/* The constraint scanner (psscan): ksi_scan_validate, ksi_scan and
   ksi_scan_match over a spec, base address, start limit and buffer taken
   from the input (raw, so invalid alignments, sizes, kinds and lengths are
   tried too).
   Invariants: validation says what ksi_scan.h documents; a roomy scan
   finishes in one call and finds exactly the positions a brute-force
   reference match (written here, independent of ksi_scan.c) accepts, with
   the cursor's anchor and candidate counts; the same scan resumed with 1-4
   slots of output gives the same hits in the same order, in a bounded
   number of calls; a scan split in two at any offset (second half with its
   own base, the way Python scans memory in chunks) gives the same hits;
   every hit is aligned, below the limit, its size bytes inside the buffer,
   and passes ksi_scan_match. The buffer is the tail of libFuzzer's
   exact-size copy of the input, so any read past its end is reported.

   Input layout (little-endian):
     0  u32 size            (raw; 4..2^24 valid)
     4  u16 align           (raw; a power of two 1..4096 valid)
     6  u16 anchor_offset
     8  u32 anchor_mask
    12  u32 anchor_value
    16  u8  check count (% 13)
    17  u8  resume capacity (1 + value % 4)
    18  u16 split: the two-part scan splits the buffer at value % (length + 1)
    20  u64 base            (physical address of the buffer's first byte)
    28  u64 start_limit     (0xFFFF...: none; else value % (length + 64))
    36  12 x {u32 offset, u32 length, u32 kind, u32 flags, u64 a, u64 b}
   420  the buffer */
#include "fuzz_common.h"

#define MAX_CHECKS 12
#define HEADER (36 + MAX_CHECKS * 32)
#define MAX_HITS 16384          /* > any buffer length tools/fuzz.py allows (-max_len) */

static int validate_reference(const ksi_scan_spec *s)
{
    if (s->align == 0 || s->align > 4096 || (s->align & (s->align - 1)))
        return 0;
    if (s->size < 4 || s->size > (1u << 24) || (uint64_t)s->anchor_offset + 4 > s->size)
        return 0;
    for (uint32_t i = 0; i < s->check_count; i++) {
        const ksi_scan_check *c = &s->checks[i];
        if (c->kind >= 1 && c->kind <= 3) {
            if (c->length != 1 && c->length != 2 && c->length != 4 && c->length != 8)
                return 0;
        } else if (c->kind == 4) {
            if (c->length < 1 || c->length > 256 || c->a >= c->length)
                return 0;
        } else {
            return 0;
        }
        if ((uint64_t)c->offset + c->length > s->size)
            return 0;
    }
    return 1;
}

static uint64_t le(const uint8_t *p, uint32_t n)
{
    uint64_t v = 0;
    for (uint32_t i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Whether the size bytes at p (a validated spec) are a candidate. */
static int match_reference(const uint8_t *p, const ksi_scan_spec *s)
{
    if (((uint32_t)le(p + s->anchor_offset, 4) & s->anchor_mask) != s->anchor_value)
        return 0;
    for (uint32_t i = 0; i < s->check_count; i++) {
        const ksi_scan_check *c = &s->checks[i];
        const uint8_t *f = p + c->offset;
        if (c->kind == KSI_SCAN_CSTRING) {
            /* a printable run of at least a bytes, ended by a NUL in the array */
            uint32_t n = 0;
            while (n < c->length && f[n] >= 0x20 && f[n] <= 0x7e)
                n++;
            if (n == c->length || f[n] != 0 || n < c->a)
                return 0;
        } else {
            uint64_t v = le(f, c->length);
            if (c->kind == KSI_SCAN_MASKED_EQUAL && (v & c->b) != c->a)
                return 0;
            if (c->kind == KSI_SCAN_RANGE && (v < c->a || v > c->b))
                return 0;
            if (c->kind == KSI_SCAN_ALIGNED
                && ((v & c->a) || v > c->b || (v == 0 && !(c->flags & KSI_SCAN_ZERO_OK))))
                return 0;
        }
    }
    return 1;
}

/* Scan to the end with `capacity` slots per call; hits appended to out. */
static size_t scan_all(const uint8_t *buf, uint64_t length, uint64_t base, uint64_t limit,
                       const ksi_scan_spec *spec, size_t capacity, uint64_t *out,
                       ksi_scan_cursor *cursor, size_t *calls)
{
    size_t total = 0, count;
    memset(cursor, 0, sizeof *cursor);
    *calls = 0;
    while (!cursor->done) {
        FZ_CHECK(total + capacity <= MAX_HITS + 4);
        FZ_CHECK(ksi_scan(buf, length, base, limit, spec, cursor, out + total, capacity,
                          &count) == KSI_OK);
        FZ_CHECK(count <= capacity);
        FZ_CHECK(cursor->done || count == capacity);   /* stops only when full */
        total += count;
        (*calls)++;
    }
    /* A finished cursor stays finished. */
    FZ_CHECK(ksi_scan(buf, length, base, limit, spec, cursor, out + total, capacity, &count)
             == KSI_OK && count == 0 && cursor->done);
    return total;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ksi_scan_check checks[MAX_CHECKS];
    static uint64_t roomy[MAX_HITS + 8], resumed[MAX_HITS + 8], split[MAX_HITS + 8];
    static uint64_t expected[MAX_HITS + 8];
    fz_reader r = fz_reader_of(data, size);
    ksi_scan_spec spec;
    ksi_scan_cursor cursor, c2;
    uint64_t base, limit, end, anchors = 0;
    size_t length, capacity, cut, n_roomy, n_resumed, n_first, n_second, calls, count,
        n_expected = 0;
    const uint8_t *buf;
    int valid, rc;

    spec.size = fz_u32(&r);
    spec.align = fz_u16(&r);
    spec.anchor_offset = fz_u16(&r);
    spec.anchor_mask = fz_u32(&r);
    spec.anchor_value = fz_u32(&r);
    spec.check_count = fz_u8(&r) % (MAX_CHECKS + 1);
    capacity = 1 + fz_u8(&r) % 4;
    cut = fz_u16(&r);
    base = fz_u64(&r);
    limit = fz_u64(&r);
    for (unsigned i = 0; i < MAX_CHECKS; i++) {
        checks[i].offset = fz_u32(&r);
        checks[i].length = fz_u32(&r);
        checks[i].kind = fz_u32(&r);
        checks[i].flags = fz_u32(&r);
        checks[i].a = fz_u64(&r);
        checks[i].b = fz_u64(&r);
    }
    spec.checks = checks;
    buf = fz_rest(&r, &length);
    if (length == 0)
        buf = NULL;
    if (length >= MAX_HITS)
        return 0;                      /* keeps the output arrays roomy */
    if (limit != UINT64_MAX)
        limit %= length + 64;
    cut %= length + 1;

    valid = validate_reference(&spec);
    FZ_CHECK((ksi_scan_validate(&spec) == KSI_OK) == valid);
    FZ_CHECK(ksi_scan_validate(NULL) == KSI_ERR_NULL_POINTER);
    memset(&cursor, 0, sizeof cursor);
    rc = ksi_scan(buf, length, base, limit, &spec, &cursor, roomy, MAX_HITS + 8, &count);
    if (!valid) {
        FZ_CHECK(rc == KSI_ERR_BAD_ARGUMENT || rc == KSI_ERR_NULL_POINTER);
        FZ_CHECK(count == 0 && !cursor.done);
        FZ_CHECK(!buf || !ksi_scan_match(buf, length, &spec));
        return 0;
    }
    FZ_CHECK(rc == KSI_OK && cursor.done);
    n_roomy = count;
    memset(&c2, 0, sizeof c2);
    FZ_CHECK(ksi_scan(buf, length, base, limit, &spec, &c2, roomy, 0, &count)
             == KSI_ERR_CAPACITY);
    if (length)
        FZ_CHECK(ksi_scan(NULL, length, base, limit, &spec, &c2, roomy, 1, &count)
                 == KSI_ERR_NULL_POINTER);

    /* The brute-force reference over every position. */
    end = length >= spec.size ? length - spec.size + 1 : 0;
    if (limit < end)
        end = limit;
    for (uint64_t pos = 0; pos < end; pos++) {
        if ((base + pos) & (spec.align - 1))
            continue;
        if (((uint32_t)le(buf + pos + spec.anchor_offset, 4) & spec.anchor_mask)
            == spec.anchor_value)
            anchors++;
        if (match_reference(buf + pos, &spec))
            expected[n_expected++] = base + pos;
    }
    FZ_CHECK(n_roomy == n_expected);
    FZ_CHECK(n_roomy == 0 || memcmp(roomy, expected, n_roomy * sizeof *roomy) == 0);
    FZ_CHECK(cursor.candidates == n_roomy && cursor.anchors == anchors);
    for (size_t i = 0; i < n_roomy; i++) {
        uint64_t off = roomy[i] - base;
        FZ_CHECK((roomy[i] & (spec.align - 1)) == 0);
        FZ_CHECK(off < limit && off + spec.size <= length);
        FZ_CHECK(ksi_scan_match(buf + off, length - off, &spec) == 1);
        FZ_CHECK(ksi_scan_match(buf + off, spec.size - 1, &spec) == 0);  /* too short */
        FZ_CHECK(i == 0 || roomy[i] - base > roomy[i - 1] - base);
    }

    /* Resumed with a tiny output array: the same hits, in bounded calls. */
    n_resumed = scan_all(buf, length, base, limit, &spec, capacity, resumed, &cursor, &calls);
    FZ_CHECK(n_resumed == n_roomy && calls <= n_roomy / capacity + 1);
    FZ_CHECK(n_roomy == 0 || memcmp(resumed, roomy, n_roomy * sizeof *roomy) == 0);
    FZ_CHECK(cursor.candidates == n_roomy && cursor.anchors == anchors);

    /* Split at cut: [0, cut) with the whole buffer, then the rest as its own
       buffer at base + cut. */
    n_first = scan_all(buf, length, base, limit < cut ? limit : cut, &spec, capacity, split,
                       &cursor, &calls);
    n_second = 0;
    if (limit > cut)
        n_second = scan_all(length ? buf + cut : NULL, length - cut, base + cut,
                            limit == UINT64_MAX ? UINT64_MAX : limit - cut, &spec, capacity,
                            split + n_first, &cursor, &calls);
    FZ_CHECK(n_first + n_second == n_roomy);
    FZ_CHECK(n_roomy == 0 || memcmp(split, roomy, n_roomy * sizeof *roomy) == 0);

    /* Whole-buffer match is the reference match at offset 0. */
    if (buf)
        FZ_CHECK(ksi_scan_match(buf, length, &spec)
                 == (length >= spec.size && match_reference(buf, &spec)));
    FZ_CHECK(ksi_scan_match(NULL, length, &spec) == 0);
    return 0;
}
