/*
 * ksi_kdump.h - compressed kdump ("diskdump", makedumpfile's KDUMP format):
 * the page index, the flattened-format record scan, and an LZO1X
 * decompressor.
 *
 * A kdump stores one 24-byte page descriptor per *dumped* page, in pfn
 * order; the descriptor of pfn p is number rank(p) = the count of set bits
 * before bit p of the dumped-pages bitmap (bit p % 8 of byte p / 8). Python
 * builds a table of ranks once (one uint64 per 4096 pfns), after which a
 * lookup is one table read plus at most 64 popcounts of 64-bit words.
 *
 * The flattened format (makedumpfile -F, QEMU dump-guest-memory -z) is a
 * 4096-byte header then records {int64 offset, int64 size} (big-endian)
 * each followed by size bytes meant for that offset of the real file, the
 * last record being -1/-1. ksi_kdump_flat_scan lists the records without
 * copying any data.
 *
 * The page reader (ksi_kdump_reader) reads physical memory from the dump
 * without Python on the way: rank -> descriptor -> the page's stored bytes
 * (in the mmap, or assembled from flattened records) -> decompressed into a
 * fixed LRU cache of pages, or straight into the caller's buffer when the
 * read covers the whole page (a sequential pass does not evict the page
 * tables the walker keeps reading). ksi_kdump_read_fn has the ksi_read_fn
 * signature, so the C walker reads a kdump's page tables through it. LZO1X
 * and snappy are decoded here; zlib and zstd through function pointers the
 * caller fills (the system's libz `uncompress` and libzstd
 * `ZSTD_decompressDCtx`), else through a generic callback.
 *
 * Every read is bounded by the lengths the caller passes; nothing here
 * allocates, prints or does I/O.
 */
#ifndef KSI_KDUMP_H
#define KSI_KDUMP_H

#include "ksi_common.h"
#include "ksi_walk.h"

/* KSI-CDEF-BEGIN */
enum ksi_kdump_constants {
    KSI_KDUMP_RANK_BITS = 4096,      /* pfns covered by one rank-table entry */
    KSI_KDUMP_FLAT_HEADER = 4096     /* bytes of the flattened format's header */
};

/* The number of rank-table entries a bitmap of bitmap_bytes needs. */
uint64_t ksi_kdump_rank_entries(uint64_t bitmap_bytes);

/* ranks[i] = set bits of the bitmap before bit i * 4096, for i < nranks
   (nranks must be ksi_kdump_rank_entries(bitmap_bytes)); *total = all set
   bits. Errors: NULL pointers, a wrong nranks. */
int ksi_kdump_build_ranks(const uint8_t *bitmap, uint64_t bitmap_bytes, uint64_t *ranks,
                          uint64_t nranks, uint64_t *total);

/* For each pfns[i]: found[i] = 1 and index[i] = rank(pfn) when its bit is
   set; found[i] = 0 (index[i] = 0) when it is clear or past the bitmap. */
int ksi_kdump_lookup(const uint8_t *bitmap, uint64_t bitmap_bytes, const uint64_t *ranks,
                     uint64_t nranks, const uint64_t *pfns, size_t count, uint64_t *index,
                     uint8_t *found);

/* Runs of set bits from *next_pfn on: writes up to capacity (start, length)
   pairs and moves *next_pfn past the last run written; *count says how
   many. Done when *next_pfn >= bitmap_bytes * 8. */
int ksi_kdump_runs(const uint8_t *bitmap, uint64_t bitmap_bytes, uint64_t *next_pfn,
                   uint64_t *starts, uint64_t *lengths, size_t capacity, size_t *count);

/* One record of a flattened file: size bytes at file position data, meant
   for offset of the real (unflattened) file. */
typedef struct {
    uint64_t offset;
    uint64_t size;
    uint64_t data;
} ksi_flat_record;

/* Where a scan of the records stands; zero it to start. */
typedef struct {
    uint64_t position;      /* file position of the next record header */
    uint64_t records;       /* records listed so far */
    uint32_t done;          /* 1 when the -1/-1 end record was read */
    uint32_t reserved;
} ksi_flat_cursor;

/* List the records of a flattened file (buf holds the whole file) from
   cursor->position (KSI_KDUMP_FLAT_HEADER at the start), at most capacity
   of them. Errors: KSI_ERR_TRUNCATED when a record header or its data runs
   past the end of the file, or the file ends before the end record;
   KSI_ERR_OUT_OF_RANGE for a negative offset or size other than the -1/-1
   end record, or offset + size past 2^63. */
int ksi_kdump_flat_scan(const uint8_t *buf, uint64_t length, ksi_flat_cursor *cursor,
                        ksi_flat_record *out, size_t capacity, size_t *count);

/* Decompress one LZO1X block (what makedumpfile -l writes per page, made by
   lzo1x_1_compress) into dst, at most dst_capacity bytes; *out_length is
   the bytes written. Errors: KSI_ERR_TRUNCATED (the input ends inside an
   instruction or before the end marker), KSI_ERR_CAPACITY (the output
   would exceed dst_capacity), KSI_ERR_OUT_OF_RANGE (a match reaches before
   the output's start), KSI_ERR_BAD_ARGUMENT (bytes after the end marker). */
int ksi_lzo1x_decompress(const uint8_t *src, size_t src_length, uint8_t *dst,
                         size_t dst_capacity, size_t *out_length);
/* Decode one snappy block (the raw format: a varint length, then literal and
   copy elements; what makedumpfile -p writes per page) into dst, at most
   dst_capacity bytes. Errors as ksi_lzo1x_decompress, and KSI_ERR_BAD_ARGUMENT
   when the length in the preamble is not the length decoded. */
int ksi_snappy_decompress(const uint8_t *src, size_t src_length, uint8_t *dst,
                          size_t dst_capacity, size_t *out_length);

/* -- the page reader ------------------------------------------------------------ */

enum ksi_kdump_reader_constants {
    KSI_KDUMP_MAX_CACHE_PAGES = 1048576,  /* ksi_kdump_cache_bytes refuses more */
    KSI_KDUMP_DESC_SIZE = 24,             /* a page_desc {u64 offset, u32 size, u32 flags,
                                             u64 page_flags} */
    KSI_KDUMP_ZLIB = 1, KSI_KDUMP_LZO = 2, KSI_KDUMP_SNAPPY = 4, KSI_KDUMP_ZSTD = 32
};

/* Why a page could not be read (ksi_kdump_reader.error, of the first failure
   since it was last cleared). */
enum ksi_kdump_page_error {
    KSI_KDUMP_PAGE_OK = 0,
    KSI_KDUMP_PAGE_DESCRIPTOR = 1,       /* the descriptor lies outside the file */
    KSI_KDUMP_PAGE_SIZE = 2,             /* a stored size above the block, or 0 with flags */
    KSI_KDUMP_PAGE_DATA = 3,             /* the stored bytes lie outside the file */
    KSI_KDUMP_PAGE_FLAGS = 4,            /* no single known compression flag */
    KSI_KDUMP_PAGE_DECOMPRESS = 5,       /* the decoder failed, or not to one block */
    KSI_KDUMP_PAGE_NO_DECOMPRESSOR = 6   /* zlib or zstd with no function to decode it */
};

/* zlib's uncompress(); libzstd's ZSTD_decompressDCtx() (with a context made
   once, not one per page as ZSTD_decompress() would) and ZSTD_isError(). */
typedef int (*ksi_zlib_uncompress_fn)(uint8_t *dst, unsigned long *dst_length,
                                      const uint8_t *src, unsigned long src_length);
typedef size_t (*ksi_zstd_decompress_fn)(void *dctx, void *dst, size_t capacity,
                                         const void *src, size_t length);
typedef unsigned (*ksi_zstd_is_error_fn)(size_t code);
/* Any decoder (kind: KSI_KDUMP_ZLIB...): 0 and *out_length on success. */
typedef int (*ksi_decompress_fn)(void *context, uint32_t kind, const uint8_t *src,
                                 size_t length, uint8_t *dst, size_t capacity,
                                 size_t *out_length);

/* The caller fills the first block of fields, then ksi_kdump_reader_init
   checks them and lays the cache out in an arena of ksi_kdump_cache_bytes. */
typedef struct {
    const uint8_t *file;            /* the whole file, as mapped */
    uint64_t file_length;
    /* A flattened file: extent_count triples {plain start, plain end, file
       position} sorted and disjoint; NULL/0 for a plain file. */
    const uint64_t *extents;
    uint64_t extent_count;
    uint64_t plain_size;            /* the plain file's size (file_length when plain) */
    const uint8_t *bitmap;          /* the dumped-pages bitmap and its rank table */
    uint64_t bitmap_bytes;
    const uint64_t *ranks;
    uint64_t nranks;
    uint64_t desc_at;               /* plain-file offset of descriptor 0 */
    uint32_t block_size;            /* a power of two, 512..1 MiB */
    uint32_t reserved0;
    ksi_zlib_uncompress_fn zlib_uncompress;     /* each may be NULL */
    ksi_zstd_decompress_fn zstd_decompress;
    void *zstd_dctx;                            /* its ZSTD_DCtx */
    ksi_zstd_is_error_fn zstd_is_error;
    ksi_decompress_fn decompress;               /* for zlib/zstd without the above */
    void *decompress_context;
    /* Laid out by ksi_kdump_reader_init (do not touch): */
    uint8_t *pages;
    uint8_t *scratch;
    uint64_t *slot_pfn;
    uint32_t *slot_next;
    uint32_t *lru_prev;
    uint32_t *lru_next;
    uint32_t *buckets;
    uint32_t slots, used, bucket_mask, lru_head, lru_tail, block_shift;
    int busy;                       /* held while a read runs (reads from several threads) */
    /* Results: */
    uint32_t error;                 /* enum ksi_kdump_page_error */
    uint64_t error_pfn;
    uint64_t hits, misses, decompressed;
} ksi_kdump_reader;

/* Bytes of arena a cache of `slots` pages of block_size needs; 0 when slots
   is 0 or above KSI_KDUMP_MAX_CACHE_PAGES or block_size is not a power of two
   in 512..1 MiB. */
uint64_t ksi_kdump_cache_bytes(uint32_t slots, uint32_t block_size);

/* Check the caller's fields and lay out an empty cache. Errors:
   KSI_ERR_NULL_POINTER, KSI_ERR_BAD_ARGUMENT (a block size, a rank table of
   the wrong size, extents unsorted, overlapping or outside the file, a plain
   size past the file), KSI_ERR_CAPACITY (arena_length is not
   ksi_kdump_cache_bytes(slots, block_size)). */
int ksi_kdump_reader_init(ksi_kdump_reader *reader, uint8_t *arena, uint64_t arena_length,
                          uint32_t slots);

/* Forget every cached page (the counters stay). */
void ksi_kdump_reader_clear(ksi_kdump_reader *reader);

/* n bytes of physical memory at pa into out; *done = the bytes read before
   the first byte that could not be read. KSI_OK; KSI_ERR_OUT_OF_RANGE when
   the page at pa + *done is not in the dump (or the address wraps);
   KSI_ERR_TRUNCATED when it is broken (reader->error and error_pfn say why,
   if error was clear). Bytes of out past *done are unspecified. */
int ksi_kdump_read(ksi_kdump_reader *reader, uint64_t pa, uint8_t *out, size_t n,
                   size_t *done);

/* ksi_kdump_read as a ksi_read_fn (context: the reader): 0 when all n bytes
   were read. */
int ksi_kdump_read_fn(void *context, uint64_t pa, uint8_t *out, size_t n);
/* KSI-CDEF-END */

#endif
