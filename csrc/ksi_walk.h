/*
 * ksi_walk.h - linear-to-physical translation through CR3 in every x86
 * paging mode, enumeration of mappings and reverse lookup.
 *
 * Rules from the Intel SDM vol. 3A chapter 4: 4.3 (32-bit paging, PSE,
 * PSE-36), 4.4 (PAE: CR3[31:5] names the four PDPTEs), 4.5 (4-level and
 * 5-level paging, canonical addresses), 4.6 (access rights: R/W and U/S are
 * AND-ed over every level, XD is OR-ed) and 4.7 (reserved-bit faults).
 *
 * Physical memory is read through a ksi_phys: the mapped image (base +
 * length) and a sorted run table (physical start, length, file offset),
 * with an optional read callback for sources that are not a mapped file.
 * Every read is bounds-checked; nothing here allocates, prints or does I/O.
 *
 * Termination: a translation reads at most one entry per level. An
 * enumeration is a depth-first walk in linear-address order whose depth is
 * the level count, so tables that point at themselves (the Windows self-map)
 * or at each other are visited once per path and cannot loop; the entries
 * read are counted and capped (ksi_walk_cursor.max_entries).
 */
#ifndef KSI_WALK_H
#define KSI_WALK_H

#include "ksi_common.h"
#include "ksi_paging.h"

/* KSI-CDEF-BEGIN */
/* One contiguous physical range stored in the image. */
typedef struct {
    uint64_t start;     /* physical address */
    uint64_t length;    /* bytes */
    uint64_t offset;    /* offset of its first byte in ksi_phys.base */
} ksi_run;

/* Read n bytes of physical memory at pa into out; return 0 on success,
   anything else when some byte is not available. */
typedef int (*ksi_read_fn)(void *context, uint64_t pa, uint8_t *out, size_t n);

/* A source of physical memory. Runs are sorted by start and do not
   overlap; reads outside every run go to read (when not NULL). */
typedef struct {
    const uint8_t *base;      /* the mapped image */
    uint64_t base_length;     /* its length: every read is checked against it */
    const ksi_run *runs;
    uint64_t run_count;
    ksi_read_fn read;         /* may be NULL */
    void *read_context;
} ksi_phys;

/* Extra ksi_paging_config.options bits for walks (beside enum ksi_paging_option). */
enum ksi_walk_option {
    KSI_WO_IGNORE_RESERVED = 256,  /* follow entries whose reserved bits are set
                                      (the CPU would fault; they stay anomalies) */
    KSI_WO_MERGE_RIGHTS = 512      /* ksi_mappings: merge adjacent pages on equal
                                      R/W and U/S only, as QEMU's `info mem` does */
};

/* Why a translation stopped (ksi_translation.reason). */
enum ksi_walk_reason {
    KSI_WALK_OK = 0,
    KSI_WALK_NOT_PRESENT = 1,    /* P=0 at fail_level */
    KSI_WALK_NOT_IN_IMAGE = 2,   /* the entry at fail_level points to a table that is not
                                    in the image; fail_level 0: the table CR3 names */
    KSI_WALK_RESERVED = 3,       /* reserved bits set at fail_level (#PF with RSVD); PAE
                                    PDPTEs never fail this way: they were accepted
                                    when CR3 was loaded, so theirs are anomalies only */
    KSI_WALK_NON_CANONICAL = 4,  /* bits 63:47 (63:56 with LA57) are not a sign extension */
    KSI_WALK_TOO_WIDE = 5        /* above 4 GiB in 32-bit or PAE paging */
};

/* Effective rights of a translation (ksi_translation.rights, ksi_mapping.rights). */
enum ksi_walk_right {
    KSI_WR_WRITABLE = 1,   /* R/W=1 at every level */
    KSI_WR_USER = 2,       /* U/S=1 at every level */
    KSI_WR_NX = 4          /* XD=1 at some level (with EFER.NXE=1) */
};

/* The whole walk of one linear address. Step i is the entry read at level
   (top level - i): its physical address, value and index in its table. */
typedef struct {
    uint64_t va;
    uint64_t pa;              /* valid when reason is KSI_WALK_OK */
    uint64_t page_size;       /* bytes; 0 when not mapped */
    uint64_t entry_address[5];
    uint64_t entry_value[5];
    uint32_t reason;          /* enum ksi_walk_reason */
    uint32_t rights;          /* enum ksi_walk_right bits (when mapped) */
    uint32_t anomalies;       /* enum ksi_pte_anomaly bits of every entry read */
    uint16_t index[5];
    uint8_t steps;            /* entries read (valid members of the arrays) */
    uint8_t fail_level;       /* level where the walk stopped; 0 when mapped or for
                                 the CR3 table, non-canonical and too-wide addresses */
} ksi_translation;

/* The short form of a translation, for large batches (24 bytes). */
typedef struct {
    uint64_t pa;
    uint64_t leaf;            /* the entry that maps the page (or the last one read) */
    uint8_t rights;           /* enum ksi_walk_right */
    uint8_t reason;           /* enum ksi_walk_reason */
    uint8_t fail_level;
    uint8_t page_shift;       /* page size = 1 << page_shift; 0 when not mapped */
    uint8_t anomalies;        /* enum ksi_pte_anomaly bits of every entry read */
    uint8_t reserved[3];
} ksi_translation_brief;

/* One merged range of mapped linear addresses. */
typedef struct {
    uint64_t start;           /* first linear address */
    uint64_t size;            /* bytes (start + size may be 2^64) */
    uint64_t pa;              /* physical address of start */
    uint64_t page_size;       /* of the first page */
    uint32_t rights;          /* enum ksi_walk_right */
    uint32_t pages;           /* pages merged (saturates at 0xFFFFFFFF) */
} ksi_mapping;

/* Where an enumeration stands; zero it (then set max_entries) to start. */
typedef struct {
    uint64_t next_va;         /* the next linear address to look at */
    uint64_t entries_read;    /* work done so far (every entry read counts) */
    uint64_t max_entries;     /* stop when entries_read reaches it; 0: no cap */
    uint64_t tables_missing;  /* tables (named by present entries) with entries not in
                                 the image */
    uint64_t reserved_skipped;/* present entries skipped for reserved bits */
    uint64_t pending_start;   /* a range not yet emitted (merging may extend it) */
    uint64_t pending_size;
    uint64_t pending_pa;
    uint64_t pending_page_size;
    uint32_t pending_rights;
    uint32_t pending_pages;
    uint32_t state;           /* enum ksi_cursor_state bits */
    uint32_t reserved0;
} ksi_walk_cursor;

enum ksi_cursor_state {
    KSI_CS_STARTED = 1,       /* next_va is set */
    KSI_CS_PENDING = 2,       /* pending_* holds a range */
    KSI_CS_WALKED = 4,        /* every leaf up to the end was seen */
    KSI_CS_DONE = 8,          /* and everything was emitted */
    KSI_CS_CAPPED = 16        /* the last call stopped at max_entries */
};

/* A paging mode's shape as the walker uses it: the C side's own table
   (ksinspect/x86/modes.py is the Python one; a test checks they agree). */
typedef struct {
    uint32_t levels;
    uint32_t entry_size;      /* bytes */
    uint32_t va_bits;         /* linear-address width */
    uint32_t canonical;       /* 1: IA-32e, addresses sign-extended from bit va_bits-1 */
    uint32_t shift[6];        /* [level]: lowest linear-address bit it indexes (0: none) */
    uint32_t entries[6];      /* [level]: entries in a table at that level */
} ksi_paging_geometry;

/* Fill *out for a mode; KSI_ERR_BAD_MODE for an unknown one. */
int ksi_paging_geometry_of(int mode, ksi_paging_geometry *out);

/* KSI_OK when the run table is sorted, disjoint and inside the image. */
int ksi_phys_validate(const ksi_phys *mem);

/* Copy n bytes of physical memory; KSI_ERR_OUT_OF_RANGE if some byte is
   not available (*done says how many bytes were copied first). */
int ksi_phys_read(const ksi_phys *mem, uint64_t pa, uint8_t *out, size_t n, size_t *done);

/* Physical address of the top-level table (or of the PAE PDPT) named by cr3. */
uint64_t ksi_table_root(uint64_t cr3, int mode);

/* Translate one linear address. KSI_OK means the walk ran: whether va is
   mapped is in result->reason. Errors: bad mode, NULL pointers. */
int ksi_translate(const ksi_phys *mem, uint64_t cr3, int mode, const ksi_paging_config *cfg,
                  uint64_t va, ksi_translation *result);

/* Translate count addresses; fill full and/or brief (either may be NULL). */
int ksi_translate_many(const ksi_phys *mem, uint64_t cr3, int mode,
                       const ksi_paging_config *cfg, const uint64_t *vas, size_t count,
                       ksi_translation *full, ksi_translation_brief *brief);

/* Translate count addresses to bare physical addresses: pas[i] is the
   physical address of vas[i], or `unmapped` when it is not mapped (for any
   reason). vas and pas may be the same array (translated in place). */
int ksi_translate_pas(const ksi_phys *mem, uint64_t cr3, int mode, const ksi_paging_config *cfg,
                      const uint64_t *vas, size_t count, uint64_t *pas, uint64_t unmapped);

/* One uncached walk packed into the return value, for callers that want
   no output struct (one call per address from Python):
     bits 51:12  the 4 KiB frame of the physical address (when mapped)
     bits 1:0    the page size: 0 4 KiB, 1 2 MiB, 2 4 MiB, 3 1 GiB
     bits 4:2    enum ksi_walk_right bits     bits 8:5  anomaly bits 3:0
     bits 11:9   enum ksi_walk_reason         bits 54:52 fail_level
   KSI_PACKED_ERROR for a bad mode, configuration or NULL pointer. */
#define KSI_PACKED_ERROR 0xFFFFFFFFFFFFFFFFULL
uint64_t ksi_translate_packed(const ksi_phys *mem, uint64_t cr3, int mode,
                              const ksi_paging_config *cfg, uint64_t va);

/* One uncached walk, for callers that remember translations by 4 KiB page:
   the brief walk into *out and, in *base_offset, where the 4 KiB-aligned
   physical page holding pa lies in mem->base when all of it lies in one run
   inside the image (UINT64_MAX otherwise, and when not mapped). */
int ksi_translate_page(const ksi_phys *mem, uint64_t cr3, int mode, const ksi_paging_config *cfg,
                       uint64_t va, ksi_translation_brief *out, uint64_t *base_offset);

/* Read n bytes of linear memory at va. Stops at the first byte that is not
   mapped or not in the image: *done bytes were copied and *failure holds
   the walk of that byte, va + *done (its reason is KSI_WALK_OK when the page
   is mapped but its physical memory is not in the image). A range that
   runs past 2^64 - 1 gives KSI_ERR_OUT_OF_RANGE (it would wrap to 0). */
int ksi_read_virtual(const ksi_phys *mem, uint64_t cr3, int mode, const ksi_paging_config *cfg,
                     uint64_t va, uint8_t *out, size_t n, size_t *done,
                     ksi_translation *failure);

/* Enumerate the mapped linear addresses in [first, last] (last inclusive)
   as merged ranges, resuming from *cursor. Adjacent pages merge when their
   physical addresses are contiguous and rights and page size are equal
   (with KSI_WO_MERGE_RIGHTS: when R/W and U/S are equal). Writes at most
   capacity ranges (*count says how many) and returns KSI_OK; cursor->state
   then holds KSI_CS_DONE when finished, KSI_CS_CAPPED when max_entries was
   reached (the range being merged is emitted then, or by the next call when
   out was full: see KSI_CS_PENDING; raise max_entries to continue), and
   neither when out is full (call again with the same cursor). Errors: bad
   mode or configuration, NULL pointers, capacity 0, first > last. */
int ksi_mappings(const ksi_phys *mem, uint64_t cr3, int mode, const ksi_paging_config *cfg,
                 uint64_t first, uint64_t last, ksi_walk_cursor *cursor,
                 ksi_mapping *out, size_t capacity, size_t *count);

/* Every page that maps physical address pa (one ksi_mapping per page, size
   = page size, pa = the page's physical base). Resumable like ksi_mappings. */
int ksi_physical_to_virtual(const ksi_phys *mem, uint64_t cr3, int mode,
                            const ksi_paging_config *cfg, uint64_t pa,
                            ksi_walk_cursor *cursor, ksi_mapping *out, size_t capacity,
                            size_t *count);

/* A fixed English phrase for an enum ksi_walk_reason; never NULL. */
const char *ksi_walk_reason_text(int reason);
/* KSI-CDEF-END */

#endif
