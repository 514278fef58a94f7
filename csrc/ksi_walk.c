/*
 * ksi_walk.c - page walks through CR3 (SDM vol. 3A 4.3-4.7): translation,
 * merged enumeration of mappings, reverse lookup, virtual reads.
 *
 * Each entry read is decoded with ksi_decode_pte, so the walker and the
 * single-entry decoder cannot disagree about a bit.
 */
#include <string.h>

#include "ksi_walk.h"

#define BIT(n) (1ULL << (n))

/* Helpers marked HOT run once per level of every walk: inlined
   (GCC and clang: forced), so a batch walk is one loop without calls. */
#if defined(__GNUC__) || defined(__clang__)
#define HOT static inline __attribute__((always_inline))
#else
#define HOT static inline
#endif

/* Anomalies that make the processor fault (SDM 4.7: PFEC.RSVD). */
#define FAULTING_ANOMALIES (KSI_PA_RESERVED_PHYS | KSI_PA_RESERVED_LEVEL | KSI_PA_XD_RESERVED)

/* A paging mode described as data (volatility3 style): the modes differ
   only by this table. */
typedef struct {
    int levels;
    unsigned width;          /* bytes per entry */
    unsigned va_bits;        /* linear-address width */
    unsigned shift[6];       /* shift[level]: lowest linear-address bit it indexes */
    unsigned entries[6];     /* entries[level]: entries in a table at that level */
    int canonical;           /* 64-bit modes: sign-extended addresses */
} mode_info;

static const mode_info MODES[4] = {
    /* 32-bit: 10 + 10 + 12 */
    {2, 4, 32, {0, 12, 22, 0, 0, 0}, {0, 1024, 1024, 0, 0, 0}, 0},
    /* PAE: 2 + 9 + 9 + 12; the top "table" is the 4-entry PDPT */
    {3, 8, 32, {0, 12, 21, 30, 0, 0}, {0, 512, 512, 4, 0, 0}, 0},
    /* 4-level: 9 x 4 + 12 */
    {4, 8, 48, {0, 12, 21, 30, 39, 0}, {0, 512, 512, 512, 512, 0}, 1},
    /* 5-level: 9 x 5 + 12 */
    {5, 8, 57, {0, 12, 21, 30, 39, 48}, {0, 512, 512, 512, 512, 512}, 1},
};

static const mode_info *mode_of(int mode)
{
    if (mode < KSI_PAGING_32BIT || mode > KSI_PAGING_5LEVEL)
        return NULL;
    return &MODES[mode];
}

int ksi_paging_geometry_of(int mode, ksi_paging_geometry *out)
{
    const mode_info *mi = mode_of(mode);
    if (!mi)
        return KSI_ERR_BAD_MODE;
    if (!out)
        return KSI_ERR_NULL_POINTER;
    out->levels = (uint32_t)mi->levels;
    out->entry_size = mi->width;
    out->va_bits = mi->va_bits;
    out->canonical = (uint32_t)mi->canonical;
    for (int level = 0; level < 6; level++) {
        out->shift[level] = mi->shift[level];
        out->entries[level] = mi->entries[level];
    }
    return KSI_OK;
}

static int check_config(const ksi_paging_config *cfg)
{
    if (cfg->maxphyaddr && (cfg->maxphyaddr < 32 || cfg->maxphyaddr > 52))
        return KSI_ERR_BAD_ARGUMENT;
    return KSI_OK;
}

/* --- physical memory ------------------------------------------------------ */

/* Little-endian loads written byte by byte (portable; compilers turn
   them into one load on little-endian hosts). */
HOT uint64_t load_le64(const uint8_t *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24
           | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48
           | (uint64_t)p[7] << 56;
}

HOT uint64_t load_le32(const uint8_t *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24;
}

HOT uint64_t load_le(const uint8_t *p, unsigned width)
{
    return width == 8 ? load_le64(p) : load_le32(p);
}

/* Index of the last run with start <= pa, or -1. */
static long find_run(const ksi_phys *mem, uint64_t pa)
{
    uint64_t lo = 0, hi = mem->run_count;
    if (!mem->runs)
        return -1;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (mem->runs[mid].start <= pa)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (long)lo - 1;
}

/* A pointer to n bytes of physical memory at pa when they lie in one run
   and inside the mapped image; NULL otherwise. hint caches the last run. */
HOT const uint8_t *direct(const ksi_phys *mem, uint64_t pa, uint64_t n, long *hint)
{
    const ksi_run *r;
    uint64_t into, at;
    long i = *hint;

    if (i < 0 || pa - mem->runs[i].start >= mem->runs[i].length) {
        if (!mem->base || !mem->runs)
            return NULL;
        i = find_run(mem, pa);
        if (i < 0)
            return NULL;
        *hint = i;
    }
    r = &mem->runs[i];
    into = pa - r->start;     /* wraps to a huge value when pa < start */
    if (into >= r->length || n > r->length - into)
        return NULL;
    at = r->offset + into;
    if (at < r->offset || at > mem->base_length || n > mem->base_length - at)
        return NULL;
    return mem->base + at;
}

int ksi_phys_validate(const ksi_phys *mem)
{
    if (!mem)
        return KSI_ERR_NULL_POINTER;
    if (mem->run_count && (!mem->runs || !mem->base))
        return KSI_ERR_NULL_POINTER;
    for (uint64_t i = 0; i < mem->run_count; i++) {
        const ksi_run *r = &mem->runs[i];
        if (r->length == 0 || r->offset > mem->base_length
            || r->length > mem->base_length - r->offset
            || r->start + (r->length - 1) < r->start)
            return KSI_ERR_BAD_ARGUMENT;
        if (i && mem->runs[i - 1].start + (mem->runs[i - 1].length - 1) >= r->start)
            return KSI_ERR_BAD_ARGUMENT;
    }
    return KSI_OK;
}

int ksi_phys_read(const ksi_phys *mem, uint64_t pa, uint8_t *out, size_t n, size_t *done)
{
    size_t copied = 0;

    if (!mem || (!out && n) || !done)
        return KSI_ERR_NULL_POINTER;
    while (copied < n) {
        uint64_t at = pa + copied, take, off, into;
        long i;
        const ksi_run *r;

        if (at < pa)
            break;                      /* past the top of the physical space */
        i = find_run(mem, at);
        r = i >= 0 ? &mem->runs[i] : NULL;
        if (r && at - r->start < r->length && mem->base) {
            into = at - r->start;
            take = r->length - into;
            if (take > n - copied)
                take = n - copied;
            off = r->offset + into;
            if (off < r->offset || off > mem->base_length || take > mem->base_length - off)
                break;
            memcpy(out + copied, mem->base + off, (size_t)take);
            copied += (size_t)take;
            continue;
        }
        /* Not in a run: ask the callback, one piece per 4 KiB page (and never
           past the next run); a piece it cannot read ends the read. */
        if (!mem->read)
            break;
        take = 4096 - (at & 4095);
        if (take > n - copied)
            take = n - copied;
        if (mem->runs && (uint64_t)(i + 1) < mem->run_count
            && mem->runs[i + 1].start - at < take)
            take = mem->runs[i + 1].start - at;
        if (mem->read(mem->read_context, at, out + copied, (size_t)take) != 0)
            break;
        copied += (size_t)take;
    }
    *done = copied;
    return copied == n ? KSI_OK : KSI_ERR_OUT_OF_RANGE;
}

/* Read one entry (4 or 8 bytes); 0 when it is not in the image. */
HOT int read_entry(const ksi_phys *mem, uint64_t pa, unsigned width, uint64_t *value,
                      long *hint)
{
    uint8_t buf[8];
    size_t done;
    const uint8_t *p = direct(mem, pa, width, hint);

    if (p) {
        *value = load_le(p, width);
        return 1;
    }
    if (ksi_phys_read(mem, pa, buf, width, &done) != KSI_OK)
        return 0;
    *value = load_le(buf, width);
    return 1;
}

/* --- addresses -------------------------------------------------------------- */

uint64_t ksi_table_root(uint64_t cr3, int mode)
{
    switch (mode) {
    case KSI_PAGING_32BIT: return cr3 & 0xFFFFF000ULL;        /* CR3[31:12] (4.3) */
    case KSI_PAGING_PAE: return cr3 & 0xFFFFFFE0ULL;          /* CR3[31:5] (4.4.1) */
    default: return cr3 & 0x000FFFFFFFFFF000ULL;              /* CR3[51:12] (4.5.2) */
    }
}

HOT uint64_t space_mask(const mode_info *mi)
{
    return mi->va_bits >= 64 ? ~0ULL : BIT(mi->va_bits) - 1;
}

/* A linear address as the walk sees it (bits va_bits-1:0) back to its
   canonical form (4.5: bits 63:va_bits copy bit va_bits-1). */
HOT uint64_t canonical(const mode_info *mi, uint64_t raw)
{
    if (mi->canonical && (raw & BIT(mi->va_bits - 1)))
        return raw | ~space_mask(mi);
    return raw;
}

HOT int is_canonical(const mode_info *mi, uint64_t va)
{
    return canonical(mi, va & space_mask(mi)) == va;
}

/* --- translation ----------------------------------------------------------- */

/* Decoded entries are memoized per level. ksi_decode_pte depends on an
   entry's address bits (MAXPHYADDR-1 down to 12, 21 or 30: where the page
   or next table is) only through ksi_pte.frame, which copies them; every
   flag, anomaly, page size and memory type comes from the other bits. So
   the decode of (value with its address bits cleared) serves every entry
   with the same flags, and the frame is that decode's frame OR-ed with the
   entry's address bits. Batches and enumerations then call ksi_decode_pte
   once per kind of entry instead of once per entry. */
#define DECODE_SLOTS 64

/* What walks use of a decoded entry (32 bytes: two slots a cache line). */
typedef struct {
    uint64_t key;             /* the value without its address bits; 0: empty (present
                                 entries, bit 0 set, are the only ones kept) */
    uint64_t frame;           /* ksi_pte.frame of the decode */
    uint64_t page_size;
    uint32_t flags;
    uint32_t anomalies;
} entry_facts;

/* What a walk found at one level, for the linear addresses that share
   va >> shift[level] (they read the same entries down to this level).
   Within one call the memory does not change, so this is exact. Each level
   keeps a direct-mapped table of such prefixes: random addresses that
   alternate between regions (the direct map, espfix, vmemmap) still find
   their upper levels (one slot per level made a random batch 3x slower
   than a sorted one). The entry's index and address are not kept: they
   follow from va and the table above. 32 bytes. */
enum { MEMO_EMPTY = 0, MEMO_TABLE = 1, MEMO_LEAF = 2, MEMO_STOP = 3, MEMO_UNREAD = 4 };

typedef struct {
    uint64_t prefix;
    uint64_t value;           /* the entry; MEMO_UNREAD: the entry above (that names the
                                 table not in the image), 0 at the top */
    uint64_t frame;           /* next table, or the page (MEMO_LEAF) */
    uint8_t kind;
    uint8_t reason;           /* MEMO_STOP / MEMO_UNREAD */
    uint8_t fail_level;
    uint8_t rights;           /* after this level */
    uint8_t anomalies;        /* after this level (every entry read down to it) */
    uint8_t page_shift;       /* MEMO_LEAF */
    uint8_t unused[2];
} level_memo;

/* Slots a level: 64, and at level 2 up to 2^MEMO_WIDE_BITS for large
   batches (the 2 MiB prefixes: 4-level espfix alone aliases 2,048 of
   them to one page table, which 64 slots hit 3% of the time). */
#define MEMO_BITS 6
#define MEMO_WIDE_BITS 11
/* Slots of a memo store: with the wide level, or 64 at every level. */
#define MEMO_STORE (4 * (1u << MEMO_BITS) + (1u << MEMO_WIDE_BITS))
#define MEMO_STORE_NARROW (5 * (1u << MEMO_BITS))

typedef struct {
    level_memo *slots[6];     /* [level], in the caller's store */
    uint64_t mask[6];         /* [level]: slots - 1 */
    unsigned bits[6];
} memo_table;

/* Empty memo tables in store (MEMO_STORE slots when wide, else
   MEMO_STORE_NARROW) for a batch of count addresses (the wide level is
   sized to the batch: clearing it costs more than a small batch gains). */
static void memo_init(memo_table *mt, level_memo *store, int wide_store, const mode_info *mi,
                      uint64_t count)
{
    unsigned wide = MEMO_BITS, used = 0;
    while (wide_store && wide < MEMO_WIDE_BITS && (1ULL << (wide + 5)) < count)
        wide++;
    for (int level = 0; level < 6; level++) {
        unsigned bits = level == 2 ? wide : MEMO_BITS;
        if (level < 1 || level > mi->levels) {
            mt->slots[level] = NULL;
            mt->mask[level] = 0;
            mt->bits[level] = 0;
            continue;
        }
        mt->slots[level] = &store[used];
        mt->mask[level] = (1ULL << bits) - 1;
        mt->bits[level] = bits;
        used += 1u << bits;
    }
    memset(store, 0, used * sizeof store[0]);
}

typedef struct {
    const ksi_phys *mem;
    const ksi_paging_config *cfg;
    const mode_info *mi;
    int mode;
    int strict;
    int cached;
    unsigned maxphy;
    uint64_t root;
    long hint;
    entry_facts scratch;
    entry_facts cache[6][DECODE_SLOTS];
} walker;

static void walker_init(walker *w, const ksi_phys *mem, uint64_t cr3, int mode,
                        const ksi_paging_config *cfg, int cached)
{
    w->mem = mem;
    w->cfg = cfg;
    w->mode = mode;
    w->mi = mode_of(mode);
    w->strict = !(cfg->options & KSI_WO_IGNORE_RESERVED);
    w->maxphy = cfg->maxphyaddr ? (unsigned)cfg->maxphyaddr : 52;
    w->root = ksi_table_root(cr3, mode);
    w->hint = -1;
    w->cached = cached;
    if (cached)
        memset(w->cache, 0, sizeof w->cache);
}

static uint64_t span(unsigned hi, unsigned lo)
{
    return ((hi >= 63) ? ~0ULL : (BIT(hi + 1) - 1)) & ~(BIT(lo) - 1);
}

/* The address bits of a present entry (SDM Tables 4-4 to 4-20). */
HOT uint64_t address_bits(const walker *w, uint64_t v, int level)
{
    if (w->mode == KSI_PAGING_32BIT) {
        if (level == 2 && (v & BIT(7)) && (w->cfg->options & KSI_PO_PSE))
            return span(31, 22);     /* PSE-36 bits 20:13 stay in the key */
        return span(31, 12);
    }
    if ((v & BIT(7)) && (level == 2 || (level == 3 && w->mode != KSI_PAGING_PAE)))
        return span(w->maxphy - 1, level == 2 ? 21 : 30);
    return span(w->maxphy - 1, 12);
}

static int facts_of(const walker *w, uint64_t value, int level, entry_facts *out)
{
    ksi_pte pte;
    int rc = ksi_decode_pte(value, w->cfg, w->mode, level, &pte);
    if (rc != KSI_OK)
        return rc;
    out->frame = pte.frame;
    out->page_size = pte.page_size;
    out->flags = pte.flags;
    out->anomalies = pte.anomalies;
    return KSI_OK;
}

/* ksi_decode_pte of a present entry: *out holds its flags, anomalies and
   page size, *frame its page or next-table address. */
HOT int decode(walker *w, uint64_t value, int level, const entry_facts **out, uint64_t *frame)
{
    entry_facts *slot;
    uint64_t bits, key;
    int rc;

    if (!w->cached) {
        rc = facts_of(w, value, level, &w->scratch);
        *out = &w->scratch;
        *frame = w->scratch.frame;
        return rc;
    }
    bits = address_bits(w, value, level);
    key = value & ~bits;
    slot = &w->cache[level][(key ^ (key >> 6) ^ (key >> 13) ^ (key >> 52) ^ (key >> 58))
                            & (DECODE_SLOTS - 1)];
    if (slot->key != key) {
        rc = facts_of(w, key, level, slot);
        if (rc != KSI_OK) {
            slot->key = 0;
            return rc;
        }
        slot->key = key;
    }
    *out = slot;
    *frame = slot->frame | (value & bits);
    return KSI_OK;
}

/* Whether the walk faults on this entry's reserved bits (SDM 4.7). PAE
   PDPTEs are not read during a walk: the processor loads them into
   registers at MOV to CR3 (4.4.1), so an image taken while this CR3 was in
   use shows PDPTEs the CPU (or emulator: QEMU's TCG sets bit 5, the A bit,
   which the SDM reserves) accepted. Their reserved bits stay anomalies. */
HOT int faults(const walker *w, const entry_facts *e, int level)
{
    if (!w->strict || !(e->anomalies & FAULTING_ANOMALIES))
        return 0;
    return !(w->mode == KSI_PAGING_PAE && level == 3);
}

/* Rights of one present entry folded into the running rights (4.6):
   PAE PDPTEs carry no R/W, U/S or XD. */
HOT uint32_t fold_rights(uint32_t rights, const entry_facts *e, int mode, int level)
{
    if (mode == KSI_PAGING_PAE && level == 3)
        return rights;
    if (!(e->flags & KSI_PF_WRITABLE))
        rights &= ~(uint32_t)KSI_WR_WRITABLE;
    if (!(e->flags & KSI_PF_USER))
        rights &= ~(uint32_t)KSI_WR_USER;
    if (e->flags & KSI_PF_NX)
        rights |= KSI_WR_NX;
    return rights;
}

/* log2 of a page size (4 KiB, 2 MiB, 4 MiB or 1 GiB); 0 for 0. */
static unsigned page_shift(uint64_t size)
{
    switch (size) {
    case 0: return 0;
    case BIT(12): return 12;
    case BIT(21): return 21;
    case BIT(22): return 22;
    case BIT(30): return 30;
    default: {
        unsigned shift = 12;
        while (shift < 63 && BIT(shift) < size)
            shift++;
        return shift;
    }
    }
}

HOT level_memo *memo_slot(const memo_table *mt, int level, uint64_t prefix)
{
    /* Consecutive prefixes get distinct slots. */
    unsigned bits = mt->bits[level];
    return &mt->slots[level][(prefix ^ (prefix >> bits) ^ (prefix >> (2 * bits)))
                             & mt->mask[level]];
}

HOT void memo_set(memo_table *mt, const mode_info *mi, int level, uint64_t va, unsigned kind,
                  uint64_t value, uint64_t frame, unsigned shift, uint32_t rights,
                  uint32_t anomalies, uint32_t reason, int fail_level)
{
    uint64_t prefix = va >> mi->shift[level];
    level_memo *m;
    if (!mt)
        return;
    m = memo_slot(mt, level, prefix);
    m->prefix = prefix;
    m->value = value;
    m->frame = frame;
    m->kind = (uint8_t)kind;
    m->reason = (uint8_t)reason;
    m->fail_level = (uint8_t)fail_level;
    m->rights = (uint8_t)rights;
    m->anomalies = (uint8_t)anomalies;
    m->page_shift = (uint8_t)shift;
}

/* The end of a walk that a memo slot holding a leaf (the page) or a failed
   entry (why it fails) answers: the same in both probe orders. */
HOT void memo_answer(const level_memo *m, uint64_t va, uint32_t rights, ksi_translation *t)
{
    if (m->kind == MEMO_LEAF) {
        t->page_size = BIT(m->page_shift);
        t->pa = m->frame | (va & (t->page_size - 1));
        t->rights = rights;
    } else {
        t->reason = m->reason;
        t->fail_level = m->fail_level;
    }
}

/* Walk va into t, replaying what mt (NULL: none) remembers of the
   addresses walked before it in this call. With path, every entry read is
   in t's arrays; without, only t->entry_value[t->steps - 1] (the last entry
   read, as ksi_translation_brief keeps it), and mt is probed from the
   bottom level up: the lowest level that remembers va's prefix holds all
   the walk needs (rights and anomalies are kept as they stand after it).
   Only the first t->steps members of the arrays are written; tidy zeroes
   the others (for output the caller keeps). */
HOT int translate_core(walker *w, memo_table *mt, uint64_t va, ksi_translation *t, int path,
                       int tidy)
{
    const mode_info *mi = w->mi;
    uint64_t table = w->root, last = 0;
    uint32_t rights = KSI_WR_WRITABLE | KSI_WR_USER, anomalies = 0;
    const entry_facts *e;
    uint64_t frame;
    unsigned step = 0;
    int level = mi->levels, rc = KSI_OK;

    t->va = va;
    t->pa = 0;
    t->page_size = 0;
    t->reason = KSI_WALK_OK;
    t->rights = 0;
    t->fail_level = 0;
    if (!mi->canonical && va > 0xFFFFFFFFULL) {
        t->reason = KSI_WALK_TOO_WIDE;
        goto done;
    }
    if (mi->canonical && !is_canonical(mi, va)) {
        t->reason = KSI_WALK_NON_CANONICAL;
        goto done;
    }
    if (mt && path) {
        /* Replay the levels an earlier address of this call shares. */
        for (; level >= 1; level--) {
            uint64_t prefix = va >> mi->shift[level];
            const level_memo *m = memo_slot(mt, level, prefix);
            uint64_t index;
            if (m->kind == MEMO_EMPTY || m->prefix != prefix)
                break;
            if (m->kind == MEMO_UNREAD) {
                t->reason = m->reason;
                t->fail_level = m->fail_level;
                goto done;
            }
            index = (va >> mi->shift[level]) & (mi->entries[level] - 1);
            t->index[step] = (uint16_t)index;
            t->entry_address[step] = table + index * mi->width;
            t->entry_value[step] = m->value;
            step++;
            rights = m->rights;
            anomalies = m->anomalies;
            if (m->kind == MEMO_TABLE) {
                table = m->frame;
                continue;
            }
            memo_answer(m, va, rights, t);
            goto done;
        }
    } else if (mt) {
        for (int at = 1; at <= mi->levels; at++) {
            uint64_t prefix = va >> mi->shift[at];
            const level_memo *m = memo_slot(mt, at, prefix);
            if (m->kind == MEMO_EMPTY || m->prefix != prefix)
                continue;
            step = (unsigned)(mi->levels - at);      /* the entries above this level */
            anomalies = m->anomalies;
            last = m->value;
            if (m->kind == MEMO_UNREAD) {
                t->reason = m->reason;
                t->fail_level = m->fail_level;
                goto done;
            }
            step++;
            rights = m->rights;
            if (m->kind == MEMO_TABLE) {
                table = m->frame;
                level = at - 1;
                break;
            }
            memo_answer(m, va, rights, t);
            goto done;
        }
    }
    for (; level >= 1; level--) {
        uint64_t index = (va >> mi->shift[level]) & (mi->entries[level] - 1);
        uint64_t address = table + index * mi->width;
        uint64_t value;

        if (!read_entry(w->mem, address, mi->width, &value, &w->hint)) {
            /* The table is not in the image: reported at the entry that
               points to it (or level 0 for the table CR3 names). */
            t->reason = KSI_WALK_NOT_IN_IMAGE;
            t->fail_level = (uint8_t)(level == mi->levels ? 0 : level + 1);
            memo_set(mt, mi, level, va, MEMO_UNREAD, last, 0, 0, 0, anomalies, t->reason,
                     t->fail_level);
            goto done;
        }
        if (path) {
            t->index[step] = (uint16_t)index;
            t->entry_address[step] = address;
            t->entry_value[step] = value;
        }
        last = value;
        step++;
        if (!(value & 1)) {
            t->reason = KSI_WALK_NOT_PRESENT;
            t->fail_level = (uint8_t)level;
            memo_set(mt, mi, level, va, MEMO_STOP, value, 0, 0, rights, anomalies, t->reason,
                     level);
            goto done;
        }
        rc = decode(w, value, level, &e, &frame);
        if (rc != KSI_OK)
            goto done;
        anomalies |= e->anomalies;
        if (faults(w, e, level)) {
            t->reason = KSI_WALK_RESERVED;
            t->fail_level = (uint8_t)level;
            memo_set(mt, mi, level, va, MEMO_STOP, value, 0, 0, rights, anomalies, t->reason,
                     level);
            goto done;
        }
        rights = fold_rights(rights, e, w->mode, level);
        if (e->flags & KSI_PF_LEAF) {
            t->page_size = e->page_size;
            t->pa = frame | (va & (e->page_size - 1));
            t->rights = rights;
            memo_set(mt, mi, level, va, MEMO_LEAF, value, frame & ~(e->page_size - 1),
                     page_shift(e->page_size), rights, anomalies, 0, 0);
            goto done;
        }
        memo_set(mt, mi, level, va, MEMO_TABLE, value, frame, 0, rights, anomalies, 0, 0);
        table = frame;
    }
    rc = KSI_ERR_BAD_LEVEL;   /* not reached: level 1 entries are leaves */
done:
    t->steps = (uint8_t)step;
    t->anomalies = anomalies;
    if (!path && step)
        t->entry_value[step - 1] = last;
    if (tidy) {
        for (unsigned i = step; i < 5; i++) {
            t->index[i] = 0;
            t->entry_address[i] = 0;
            t->entry_value[i] = 0;
        }
    }
    return rc;
}

/* The whole walk (every entry read in t's arrays). */
static int translate_one(walker *w, memo_table *mt, uint64_t va, ksi_translation *t, int tidy)
{
    return translate_core(w, mt, va, t, 1, tidy);
}

/* The walk as ksi_translation_brief keeps it (see translate_core). */
static int translate_brief(walker *w, memo_table *mt, uint64_t va, ksi_translation *t)
{
    return translate_core(w, mt, va, t, 0, 0);
}

static int check_walk_args(const ksi_phys *mem, int mode, const ksi_paging_config *cfg)
{
    if (!mem || !cfg)
        return KSI_ERR_NULL_POINTER;
    if (!mode_of(mode))
        return KSI_ERR_BAD_MODE;
    return check_config(cfg);
}

int ksi_translate(const ksi_phys *mem, uint64_t cr3, int mode, const ksi_paging_config *cfg,
                  uint64_t va, ksi_translation *result)
{
    walker w;
    int rc = check_walk_args(mem, mode, cfg);

    if (rc != KSI_OK)
        return rc;
    if (!result)
        return KSI_ERR_NULL_POINTER;
    walker_init(&w, mem, cr3, mode, cfg, 0);
    return translate_one(&w, NULL, va, result, 1);
}

static void brief_of(const ksi_translation *t, ksi_translation_brief *b)
{
    b->pa = t->pa;
    b->leaf = t->steps ? t->entry_value[t->steps - 1] : 0;
    b->rights = (uint8_t)t->rights;
    b->reason = (uint8_t)t->reason;
    b->fail_level = t->fail_level;
    b->page_shift = (uint8_t)page_shift(t->page_size);
    b->anomalies = (uint8_t)t->anomalies;
    b->reserved[0] = b->reserved[1] = b->reserved[2] = 0;
}

int ksi_translate_many(const ksi_phys *mem, uint64_t cr3, int mode,
                       const ksi_paging_config *cfg, const uint64_t *vas, size_t count,
                       ksi_translation *full, ksi_translation_brief *brief)
{
    walker w;
    level_memo store[MEMO_STORE];
    memo_table memo, *mt = count > 8 ? &memo : NULL;
    ksi_translation local;
    int rc = check_walk_args(mem, mode, cfg);

    if (rc != KSI_OK)
        return rc;
    if (count && !vas)
        return KSI_ERR_NULL_POINTER;
    walker_init(&w, mem, cr3, mode, cfg, mt != NULL);
    if (mt)
        memo_init(mt, store, 1, w.mi, count);
    if (!full) {
        for (size_t i = 0; i < count; i++) {
            rc = translate_brief(&w, mt, vas[i], &local);
            if (rc != KSI_OK)
                return rc;
            if (brief)
                brief_of(&local, &brief[i]);
        }
        return KSI_OK;
    }
    for (size_t i = 0; i < count; i++) {
        rc = translate_one(&w, mt, vas[i], &full[i], 1);
        if (rc != KSI_OK)
            return rc;
        if (brief)
            brief_of(&full[i], &brief[i]);
    }
    return KSI_OK;
}

int ksi_translate_pas(const ksi_phys *mem, uint64_t cr3, int mode, const ksi_paging_config *cfg,
                      const uint64_t *vas, size_t count, uint64_t *pas, uint64_t unmapped)
{
    walker w;
    level_memo store[MEMO_STORE];
    memo_table memo, *mt = count > 8 ? &memo : NULL;
    ksi_translation t;
    int rc = check_walk_args(mem, mode, cfg);

    if (rc != KSI_OK)
        return rc;
    if (count && (!vas || !pas))
        return KSI_ERR_NULL_POINTER;
    walker_init(&w, mem, cr3, mode, cfg, mt != NULL);
    if (mt)
        memo_init(mt, store, 1, w.mi, count);
    for (size_t i = 0; i < count; i++) {
        /* vas and pas may be the same array: read before writing. */
        rc = translate_brief(&w, mt, vas[i], &t);
        if (rc != KSI_OK)
            return rc;
        pas[i] = t.reason == KSI_WALK_OK ? t.pa : unmapped;
    }
    return KSI_OK;
}

uint64_t ksi_translate_packed(const ksi_phys *mem, uint64_t cr3, int mode,
                              const ksi_paging_config *cfg, uint64_t va)
{
    walker w;
    ksi_translation t;
    uint64_t code = 0;

    if (check_walk_args(mem, mode, cfg) != KSI_OK)
        return KSI_PACKED_ERROR;
    walker_init(&w, mem, cr3, mode, cfg, 0);
    if (translate_one(&w, NULL, va, &t, 0) != KSI_OK)
        return KSI_PACKED_ERROR;
    switch (t.page_size) {
    case BIT(21): code = 1; break;
    case BIT(22): code = 2; break;
    case BIT(30): code = 3; break;
    default: code = 0; break;
    }
    if (t.reason != KSI_WALK_OK)
        return (uint64_t)(t.reason & 7) << 9 | (uint64_t)(t.anomalies & 15) << 5
               | (uint64_t)(t.fail_level & 7) << 52;
    return (t.pa & 0x000FFFFFFFFFF000ULL) | code | (uint64_t)(t.rights & 7) << 2
           | (uint64_t)(t.anomalies & 15) << 5;
}

int ksi_translate_page(const ksi_phys *mem, uint64_t cr3, int mode, const ksi_paging_config *cfg,
                       uint64_t va, ksi_translation_brief *out, uint64_t *base_offset)
{
    walker w;
    ksi_translation t;
    const uint8_t *page;
    int rc = check_walk_args(mem, mode, cfg);

    if (rc != KSI_OK)
        return rc;
    if (!out || !base_offset)
        return KSI_ERR_NULL_POINTER;
    walker_init(&w, mem, cr3, mode, cfg, 0);
    rc = translate_one(&w, NULL, va, &t, 0);
    if (rc != KSI_OK)
        return rc;
    brief_of(&t, out);
    *base_offset = UINT64_MAX;
    if (t.reason == KSI_WALK_OK) {
        page = direct(mem, t.pa & ~(uint64_t)4095, 4096, &w.hint);
        if (page)
            *base_offset = (uint64_t)(page - mem->base);
    }
    return KSI_OK;
}

int ksi_read_virtual(const ksi_phys *mem, uint64_t cr3, int mode, const ksi_paging_config *cfg,
                     uint64_t va, uint8_t *out, size_t n, size_t *done,
                     ksi_translation *failure)
{
    walker w;
    level_memo store[MEMO_STORE_NARROW];      /* reads walk pages in order: 64 a level */
    memo_table memo;
    ksi_translation t;
    size_t copied = 0;
    int rc = check_walk_args(mem, mode, cfg);

    if (rc != KSI_OK)
        return rc;
    if (!done || !failure || (!out && n))
        return KSI_ERR_NULL_POINTER;
    *done = 0;
    /* A range past the top of the 64-bit space would wrap to address 0. */
    if (n && va + (n - 1) < va)
        return KSI_ERR_OUT_OF_RANGE;
    walker_init(&w, mem, cr3, mode, cfg, n > 8192);
    if (n > 8192)
        memo_init(&memo, store, 0, w.mi, n >> 12);
    memset(failure, 0, sizeof *failure);
    while (copied < n) {
        uint64_t at = va + copied, take;
        size_t got;

        rc = translate_one(&w, n > 8192 ? &memo : NULL, at, &t, 1);
        if (rc != KSI_OK)
            return rc;
        if (t.reason != KSI_WALK_OK) {
            *failure = t;
            break;
        }
        take = t.page_size - (at & (t.page_size - 1));
        if (take > n - copied)
            take = n - copied;
        ksi_phys_read(mem, t.pa, out + copied, (size_t)take, &got);
        copied += got;
        if (got < take) {
            /* Mapped, but its memory is not in the image from the byte after
               the last one copied: the same walk, at that byte. */
            *failure = t;
            failure->va = at + got;
            failure->pa = t.pa + got;
            break;
        }
    }
    *done = copied;
    return KSI_OK;
}

/* --- enumeration ------------------------------------------------------------- */

enum { GO_ON = 0, STOP_FULL = 1, STOP_CAPPED = 2 };

typedef struct enumeration enumeration;
typedef int (*leaf_fn)(enumeration *en, uint64_t va, uint64_t size, uint64_t pa,
                       uint64_t page_size, uint32_t rights);

struct enumeration {
    walker w;
    ksi_walk_cursor *cur;
    uint64_t next_raw;      /* the walk position without sign extension */
    uint64_t last_raw;
    leaf_fn leaf;
    ksi_mapping *out;
    size_t capacity;
    size_t count;
    int merge_rights;
    uint64_t target_pa;     /* ksi_physical_to_virtual */
};

static int emit(enumeration *en, uint64_t start, uint64_t size, uint64_t pa,
                uint64_t page_size, uint32_t rights, uint32_t pages)
{
    ksi_mapping *m;
    if (en->count >= en->capacity)
        return STOP_FULL;
    m = &en->out[en->count++];
    m->start = start;
    m->size = size;
    m->pa = pa;
    m->page_size = page_size;
    m->rights = rights;
    m->pages = pages;
    return GO_ON;
}

static int merge_leaf(enumeration *en, uint64_t va, uint64_t size, uint64_t pa,
                      uint64_t page_size, uint32_t rights)
{
    ksi_walk_cursor *c = en->cur;

    if (c->state & KSI_CS_PENDING) {
        int adjacent = c->pending_start + c->pending_size == va;
        int same;
        if (en->merge_rights)
            same = ((c->pending_rights ^ rights) & (KSI_WR_WRITABLE | KSI_WR_USER)) == 0;
        else
            same = c->pending_rights == rights && c->pending_page_size == page_size
                   && c->pending_pa + c->pending_size == pa;
        /* Never merge across the top of the space (start + size == 2^64). */
        if (adjacent && same && va != 0) {
            c->pending_size += size;
            if (c->pending_pages != 0xFFFFFFFFu)
                c->pending_pages++;
            return GO_ON;
        }
        if (emit(en, c->pending_start, c->pending_size, c->pending_pa, c->pending_page_size,
                 c->pending_rights, c->pending_pages) != GO_ON)
            return STOP_FULL;
    }
    c->pending_start = va;
    c->pending_size = size;
    c->pending_pa = pa;
    c->pending_page_size = page_size;
    c->pending_rights = rights;
    c->pending_pages = 1;
    c->state |= KSI_CS_PENDING;
    return GO_ON;
}

static int alias_leaf(enumeration *en, uint64_t va, uint64_t size, uint64_t pa,
                      uint64_t page_size, uint32_t rights)
{
    uint64_t page_va = va & ~(page_size - 1);
    uint64_t page_pa = pa & ~(page_size - 1);
    (void)size;
    if (en->target_pa - page_pa < page_size && en->target_pa >= page_pa)
        return emit(en, page_va, page_size, page_pa, page_size, rights, 1);
    return GO_ON;
}

/* Walk the table at table_pa (level, covering raw linear addresses from
   base) from the entry that holds en->next_raw. */
static int walk_table(enumeration *en, uint64_t table_pa, int level, uint64_t base,
                      uint32_t rights)
{
    const mode_info *mi = en->w.mi;
    ksi_walk_cursor *c = en->cur;
    unsigned shift = mi->shift[level];
    uint64_t span = BIT(shift);
    uint64_t first = 0, count = mi->entries[level];
    uint64_t table_bytes = count * mi->width;
    const uint8_t *direct_table = direct(en->w.mem, table_pa, table_bytes, &en->w.hint);
    int missing = 0;

    if (en->next_raw > base)
        first = (en->next_raw - base) >> shift;
    if (base > en->last_raw)
        return GO_ON;
    if ((en->last_raw - base) >> shift < count)
        count = ((en->last_raw - base) >> shift) + 1;    /* entries up to last */
    for (uint64_t i = first; i < count; i++) {
        uint64_t va, value, frame;
        const entry_facts *e;
        uint32_t r;
        int rc;

        if (c->max_entries && c->entries_read >= c->max_entries) {
            va = base + i * span;
            if (va > en->next_raw)
                en->next_raw = va;
            return STOP_CAPPED;
        }
        if (direct_table) {
            /* Skip absent entries fast: P is bit 0 of the entry's first byte. */
            uint64_t stop = count, j = i;
            if (c->max_entries && c->max_entries - c->entries_read < stop - i)
                stop = i + (c->max_entries - c->entries_read);
            while (j < stop && !(direct_table[j * mi->width] & 1))
                j++;
            c->entries_read += j - i;
            i = j;
            if (i >= stop) {
                i--;             /* the loop's i++ brings it back to stop */
                continue;
            }
            c->entries_read++;
            value = load_le(direct_table + i * mi->width, mi->width);
        } else {
            c->entries_read++;
            if (!read_entry(en->w.mem, table_pa + i * mi->width, mi->width, &value,
                            &en->w.hint)) {
                if (!missing) {
                    missing = 1;
                    c->tables_missing++;
                }
                continue;
            }
        }
        if (!(value & 1))
            continue;
        va = base + i * span;       /* raw */
        rc = decode(&en->w, value, level, &e, &frame);
        if (rc != KSI_OK)
            return -rc;   /* negative: a status, not a stop reason */
        if (faults(&en->w, e, level)) {
            c->reserved_skipped++;
            continue;
        }
        r = fold_rights(rights, e, en->w.mode, level);
        if (e->flags & KSI_PF_LEAF) {
            uint64_t start = va > en->next_raw ? va : en->next_raw;
            uint64_t end = va + (e->page_size - 1);          /* inclusive, raw */
            uint64_t page_size = e->page_size;
            if (end > en->last_raw)
                end = en->last_raw;
            rc = en->leaf(en, canonical(mi, start), end - start + 1,
                          frame + (start - va), page_size, r);
            if (rc != GO_ON) {
                en->next_raw = start;
                return rc;
            }
            if (end == en->last_raw) {
                en->next_raw = end;     /* walked to the end */
                c->state |= KSI_CS_WALKED;
                return GO_ON;
            }
            en->next_raw = end + 1;
        } else {
            rc = walk_table(en, frame, level - 1, va, r);
            if (rc != GO_ON)
                return rc;
            if (c->state & KSI_CS_WALKED)
                return GO_ON;
        }
    }
    return GO_ON;
}

/* first / last (canonical, inclusive) as raw walk positions; 0 when empty.
   Addresses in the non-canonical hole round to the nearer half inside. */
static int raw_bounds(const mode_info *mi, uint64_t first, uint64_t last, uint64_t *lo,
                      uint64_t *hi)
{
    uint64_t mask = space_mask(mi);
    if (!mi->canonical) {
        if (first > mask)
            return 0;
        *lo = first;
        *hi = last > mask ? mask : last;
        return *lo <= *hi;
    }
    *lo = is_canonical(mi, first) ? (first & mask) : BIT(mi->va_bits - 1);
    *hi = is_canonical(mi, last) ? (last & mask) : BIT(mi->va_bits - 1) - 1;
    return *lo <= *hi;
}

static int run_enumeration(enumeration *en, uint64_t first, uint64_t last)
{
    ksi_walk_cursor *c = en->cur;
    const mode_info *mi = en->w.mi;
    uint64_t lo, hi;
    int rc;

    c->state &= ~(uint32_t)KSI_CS_CAPPED;
    if (c->state & KSI_CS_DONE)
        return KSI_OK;
    if (!raw_bounds(mi, first, last, &lo, &hi)) {
        c->state |= KSI_CS_WALKED | KSI_CS_DONE;
        return KSI_OK;
    }
    en->last_raw = hi;
    if (!(c->state & KSI_CS_STARTED)) {
        c->next_va = canonical(mi, lo);
        c->state |= KSI_CS_STARTED;
    }
    en->next_raw = c->next_va & space_mask(mi);
    if (en->next_raw < lo)
        en->next_raw = lo;

    if (!(c->state & KSI_CS_WALKED)) {
        rc = walk_table(en, en->w.root, mi->levels, 0, KSI_WR_WRITABLE | KSI_WR_USER);
        if (rc < 0)
            return -rc;
        c->next_va = canonical(mi, en->next_raw);
        if (rc == STOP_FULL)
            return KSI_OK;
        if (rc == STOP_CAPPED)
            c->state |= KSI_CS_CAPPED;   /* the range found so far is emitted below */
        else
            c->state |= KSI_CS_WALKED;
    }
    if (c->state & KSI_CS_PENDING) {
        if (emit(en, c->pending_start, c->pending_size, c->pending_pa, c->pending_page_size,
                 c->pending_rights, c->pending_pages) != GO_ON)
            return KSI_OK;
        c->state &= ~(uint32_t)KSI_CS_PENDING;
    }
    if (c->state & KSI_CS_WALKED)
        c->state |= KSI_CS_DONE;
    return KSI_OK;
}

static int start_enumeration(enumeration *en, const ksi_phys *mem, uint64_t cr3, int mode,
                             const ksi_paging_config *cfg, ksi_walk_cursor *cursor,
                             ksi_mapping *out, size_t capacity, size_t *count)
{
    int rc = check_walk_args(mem, mode, cfg);
    if (rc != KSI_OK)
        return rc;
    if (!cursor || !out || !count)
        return KSI_ERR_NULL_POINTER;
    if (capacity == 0)
        return KSI_ERR_CAPACITY;
    *count = 0;
    memset(en, 0, sizeof *en);
    walker_init(&en->w, mem, cr3, mode, cfg, 1);
    en->cur = cursor;
    en->out = out;
    en->capacity = capacity;
    en->merge_rights = (cfg->options & KSI_WO_MERGE_RIGHTS) != 0;
    return KSI_OK;
}

int ksi_mappings(const ksi_phys *mem, uint64_t cr3, int mode, const ksi_paging_config *cfg,
                 uint64_t first, uint64_t last, ksi_walk_cursor *cursor,
                 ksi_mapping *out, size_t capacity, size_t *count)
{
    enumeration en;
    int rc = start_enumeration(&en, mem, cr3, mode, cfg, cursor, out, capacity, count);
    if (rc != KSI_OK)
        return rc;
    if (first > last)
        return KSI_ERR_BAD_ARGUMENT;
    en.leaf = merge_leaf;
    rc = run_enumeration(&en, first, last);
    *count = en.count;
    return rc;
}

int ksi_physical_to_virtual(const ksi_phys *mem, uint64_t cr3, int mode,
                            const ksi_paging_config *cfg, uint64_t pa,
                            ksi_walk_cursor *cursor, ksi_mapping *out, size_t capacity,
                            size_t *count)
{
    enumeration en;
    int rc = start_enumeration(&en, mem, cr3, mode, cfg, cursor, out, capacity, count);
    if (rc != KSI_OK)
        return rc;
    en.leaf = alias_leaf;
    en.target_pa = pa;
    rc = run_enumeration(&en, 0, ~0ULL);
    *count = en.count;
    return rc;
}

const char *ksi_walk_reason_text(int reason)
{
    switch (reason) {
    case KSI_WALK_OK: return "mapped";
    case KSI_WALK_NOT_PRESENT: return "not present";
    case KSI_WALK_NOT_IN_IMAGE: return "not in image";
    case KSI_WALK_RESERVED: return "reserved bits set";
    case KSI_WALK_NON_CANONICAL: return "not canonical";
    case KSI_WALK_TOO_WIDE: return "above 4 GiB";
    default: return "unknown reason";
    }
}
