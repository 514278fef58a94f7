/* The kdump part of the core: the page index (ksi_kdump_build_ranks,
   ksi_kdump_lookup, ksi_kdump_runs), the flattened-format record scan
   (ksi_kdump_flat_scan) and the LZO1X decoder (ksi_lzo1x_decompress).
   The first byte picks the entry point; the rest is its input:

     0: a bitmap. Invariants: every pfn's lookup equals a bit-by-bit rank
        written here (independent of ksi_kdump.c), pfns past the bitmap are
        not found, the batch equals single lookups (on a sample of pfns), and the runs listed with
        1-4 slots of output, resumed, are exactly the runs of set bits.
     1: a flattened file (the rest of the input, from offset 0; the scan
        starts at min(header byte * 16, length)). Invariants: every record
        lies inside the file, records are consecutive (each header right after
        the previous data), a scan resumed one record at a time gives the same
        records and the same status as a roomy one.
     2: an LZO1X block; byte 1 (x 64) is the output capacity. Invariants: the
        output never exceeds the capacity; on success, decoding again with
        exactly that output length gives the same bytes and one byte less
        fails with KSI_ERR_CAPACITY.

   Each buffer is the tail of libFuzzer's exact-size copy, so a read past its
   end is reported by ASan. */
#include "fuzz_common.h"

#define MAX_PFNS (8 * 1024)
#define MAX_RECORDS 4096

static uint64_t ranks[MAX_PFNS / 4096 + 2];
static uint64_t pfns[MAX_PFNS + 64], got[MAX_PFNS + 64], starts[64], lengths[64];
static uint8_t found[MAX_PFNS + 64];
static ksi_flat_record roomy[MAX_RECORDS], one[1];
static uint8_t out1[1 << 16], out2[1 << 16];

static void index_case(const uint8_t *bitmap, size_t n)
{
    if (n > MAX_PFNS / 8)
        n = MAX_PFNS / 8;
    uint64_t nranks = ksi_kdump_rank_entries(n), total = 0;
    FZ_CHECK(nranks <= sizeof ranks / sizeof ranks[0]);
    FZ_CHECK(ksi_kdump_build_ranks(bitmap, n, ranks, nranks, &total) == KSI_OK);
    FZ_CHECK(ksi_kdump_build_ranks(bitmap, n, ranks, nranks + 1, &total) == KSI_ERR_BAD_ARGUMENT);
    uint64_t bits = (uint64_t)n * 8, rank = 0;
    size_t count = 0;
    for (uint64_t p = 0; p < bits + 64; p++)
        pfns[count++] = p;
    FZ_CHECK(ksi_kdump_lookup(bitmap, n, ranks, nranks, pfns, count, got, found) == KSI_OK);
    for (uint64_t p = 0; p < bits + 64; p++) {
        int set = p < bits && (bitmap[p / 8] >> (p % 8) & 1);
        FZ_CHECK(found[p] == set);
        FZ_CHECK(got[p] == (set ? rank : 0));
        if (p % 61 == 0 || p % 4096 == 0 || p % 4096 == 4095 || p + 1 >= bits) {
            /* single lookups on a sample (the batch above covers every pfn) */
            uint64_t single = 7;
            uint8_t one_found = 9;
            FZ_CHECK(ksi_kdump_lookup(bitmap, n, ranks, nranks, &p, 1, &single, &one_found)
                     == KSI_OK);
            FZ_CHECK(one_found == found[p] && single == got[p]);
        }
        rank += set;
    }
    FZ_CHECK(rank == total);
    /* Runs, resumed with a small output. */
    uint64_t next = 0, expect = 0;
    size_t capacity = 1 + (n ? bitmap[0] % 4 : 0);
    unsigned calls = 0;
    while (next < bits) {
        size_t got_runs = 0;
        FZ_CHECK(ksi_kdump_runs(bitmap, n, &next, starts, lengths, capacity, &got_runs) == KSI_OK);
        FZ_CHECK(++calls <= bits + 2);
        for (size_t i = 0; i < got_runs; i++) {
            /* The reference: the next set bit from expect, then the run's end. */
            while (expect < bits && !(bitmap[expect / 8] >> (expect % 8) & 1))
                expect++;
            FZ_CHECK(starts[i] == expect && lengths[i] > 0);
            uint64_t end = expect;
            while (end < bits && (bitmap[end / 8] >> (end % 8) & 1))
                end++;
            FZ_CHECK(lengths[i] == end - expect);
            expect = end;
        }
        if (got_runs < capacity)
            break;
    }
    while (expect < bits && !(bitmap[expect / 8] >> (expect % 8) & 1))
        expect++;
    FZ_CHECK(expect == bits);       /* no run was missed */
}

static void flat_case(const uint8_t *buf, size_t n, uint8_t start_byte)
{
    uint64_t start = (uint64_t)start_byte * 16;
    if (start > n)
        start = n;
    ksi_flat_cursor a = {start, 0, 0, 0}, b = {start, 0, 0, 0};
    size_t count = 0;
    int status = ksi_kdump_flat_scan(buf, n, &a, roomy, MAX_RECORDS, &count);
    FZ_CHECK(count <= MAX_RECORDS);
    uint64_t pos = start;
    for (size_t i = 0; i < count; i++) {
        FZ_CHECK(roomy[i].data == pos + 16);
        FZ_CHECK(roomy[i].data <= n && roomy[i].size <= n - roomy[i].data);
        FZ_CHECK(!(roomy[i].offset >> 63) && !((roomy[i].offset + roomy[i].size) >> 63));
        pos = roomy[i].data + roomy[i].size;
    }
    if (status == KSI_OK && !a.done)
        FZ_CHECK(count == MAX_RECORDS);          /* only a full output stops a clean scan */
    size_t seen = 0;
    int status_b = KSI_OK;
    while (!b.done && seen < count + 1) {
        size_t c = 0;
        status_b = ksi_kdump_flat_scan(buf, n, &b, one, 1, &c);
        if (c) {
            FZ_CHECK(seen < count && memcmp(&one[0], &roomy[seen], sizeof one[0]) == 0);
            seen++;
        }
        if (status_b != KSI_OK || (!c && !b.done))
            break;
    }
    if (count < MAX_RECORDS) {
        FZ_CHECK(seen == count && status_b == status && b.done == a.done);
    }
}

static void lzo_case(const uint8_t *src, size_t n, uint8_t cap_byte)
{
    size_t capacity = (size_t)cap_byte * 64;
    size_t length = 12345;
    memset(out1, 0xA5, sizeof out1);
    int status = ksi_lzo1x_decompress(src, n, out1, capacity, &length);
    FZ_CHECK(length <= capacity);
    for (size_t i = capacity; i < capacity + 64 && i < sizeof out1; i++)
        FZ_CHECK(out1[i] == 0xA5);               /* nothing written past the capacity */
    if (status != KSI_OK) {
        FZ_CHECK(length == 0 || status == KSI_ERR_BAD_ARGUMENT);
        return;
    }
    size_t again = 0;
    FZ_CHECK(ksi_lzo1x_decompress(src, n, out2, length, &again) == KSI_OK);
    FZ_CHECK(again == length && memcmp(out1, out2, length) == 0);
    if (length)
        FZ_CHECK(ksi_lzo1x_decompress(src, n, out2, length - 1, &again) == KSI_ERR_CAPACITY);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t kind = data[0] % 3, param = data[1];
    size_t n = size - 2;
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, data + 2, n);
    if (kind == 0)
        index_case(copy, n);
    else if (kind == 1)
        flat_case(copy, n, param);
    else
        lzo_case(copy, n, param);
    free(copy);
    return 0;
}
