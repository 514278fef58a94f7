/*
 * ksi_paging.c - decode one paging-structure entry (SDM vol. 3A 4.3-4.5,
 * 4.6.2, 4.9.2; Table 11-10 and 11-12 for PAT).
 */
#include <string.h>

#include "ksi_paging.h"

#define BIT(n) (1ULL << (n))
/* Bits hi..lo inclusive; empty when hi < lo. */
static uint64_t span(unsigned hi, unsigned lo)
{
    if (hi < lo)
        return 0;
    return ((hi >= 63) ? ~0ULL : (BIT(hi + 1) - 1)) & ~(BIT(lo) - 1);
}

uint64_t ksi_pat_default(void)
{
    /* PA0..PA7 = WB WT UC- UC WB WT UC- UC */
    return 0x0007040600070406ULL;
}

int ksi_paging_levels(int mode)
{
    switch (mode) {
    case KSI_PAGING_32BIT: return 2;
    case KSI_PAGING_PAE: return 3;
    case KSI_PAGING_4LEVEL: return 4;
    case KSI_PAGING_5LEVEL: return 5;
    default: return 0;
    }
}

static void memory_type(uint64_t pat_msr, ksi_pte *e)
{
    uint64_t f = e->flags;
    /* Paging-structure references have no PAT bit: it is taken as 0. */
    e->pat_index = ((f & KSI_PF_PAT) ? 4 : 0) | ((f & KSI_PF_PCD) ? 2 : 0) | ((f & KSI_PF_PWT) ? 1 : 0);
    e->memory_type = (pat_msr >> (8 * e->pat_index)) & 0xFF;
    if (e->memory_type == 2 || e->memory_type == 3 || e->memory_type > 7)
        e->anomalies |= KSI_PA_RESERVED_MEMTYPE;
}

static void flag_reserved(ksi_pte *e, uint64_t mask, uint64_t anomaly)
{
    uint64_t hit = e->raw & mask;
    if (hit) {
        e->reserved_bits |= hit;
        e->anomalies |= anomaly;
    }
}

static void decode_32bit(uint64_t v, const ksi_paging_config *cfg, unsigned maxphy, ksi_pte *e)
{
    if (e->level == 2 && (v & BIT(7)) && (cfg->options & KSI_PO_PSE)) {
        /* 4 MiB page; PSE-36 puts PA bits (M-1):32 in bits (M-19):13,
           with M = min(MAXPHYADDR, 40) (SDM Table 4-4). */
        unsigned m = maxphy < 40 ? maxphy : 40;
        e->flags |= KSI_PF_LARGE | KSI_PF_LEAF;
        if (v & BIT(12)) e->flags |= KSI_PF_PAT;
        e->page_size = 4ULL << 20;
        e->frame = (v & span(31, 22)) | (((v >> 13) & ((1ULL << (m - 32)) - 1)) << 32);
        flag_reserved(e, span(20, m - 19), KSI_PA_RESERVED_PHYS);
        flag_reserved(e, BIT(21), KSI_PA_RESERVED_LEVEL);
    } else if (e->level == 2) {
        e->frame = v & span(31, 12);
    } else {
        e->flags |= KSI_PF_LEAF;
        if (v & BIT(7)) e->flags |= KSI_PF_PAT;
        e->page_size = 4096;
        e->frame = v & span(31, 12);
    }
}

static void decode_64bit_entry(uint64_t v, const ksi_paging_config *cfg, unsigned maxphy, ksi_pte *e)
{
    int pae = e->mode == KSI_PAGING_PAE;
    unsigned level = (unsigned)e->level;

    /* PAE entries reserve bits 62:M; IA-32e entries ignore 62:52 (Tables 4-8..4-11). */
    flag_reserved(e, span(pae ? 62 : 51, maxphy), KSI_PA_RESERVED_PHYS);
    if (v & BIT(63)) {
        if (!(cfg->options & KSI_PO_NXE) || (pae && level == 3))
            flag_reserved(e, BIT(63), KSI_PA_XD_RESERVED);
        else
            e->flags |= KSI_PF_NX;
    }

    if (pae && level == 3) {
        /* PAE PDPTE: only P, PWT and PCD exist (SDM Table 4-8). */
        e->flags &= ~(uint64_t)(KSI_PF_WRITABLE | KSI_PF_USER | KSI_PF_ACCESSED);
        flag_reserved(e, span(2, 1) | span(8, 5), KSI_PA_RESERVED_LEVEL);
        e->frame = v & span(51, 12);
        return;
    }
    if (level >= 4) {
        /* PML5E / PML4E: PS is reserved (SDM Tables 4-14, 4-15). */
        flag_reserved(e, BIT(7), KSI_PA_RESERVED_LEVEL);
        e->frame = v & span(51, 12);
        return;
    }
    if (level == 1 || (v & BIT(7))) {
        unsigned shift = level == 1 ? 12 : (level == 2 ? 21 : 30);
        e->flags |= KSI_PF_LEAF;
        if (level > 1) {
            e->flags |= KSI_PF_LARGE;
            /* 2 MiB and 1 GiB pages: PAT moves to bit 12; bits up to the
               frame are reserved (SDM Tables 4-17, 4-18). */
            if (v & BIT(12)) e->flags |= KSI_PF_PAT;
            flag_reserved(e, span(shift - 1, 13), KSI_PA_RESERVED_LEVEL);
        } else if (v & BIT(7)) {
            e->flags |= KSI_PF_PAT;
        }
        e->page_size = 1ULL << shift;
        e->frame = v & span(51, shift);
        if (!pae)
            e->pkey = (v >> 59) & 0xF;
        return;
    }
    e->frame = v & span(51, 12);
}

int ksi_decode_pte(uint64_t v, const ksi_paging_config *cfg, int mode, int level, ksi_pte *out)
{
    /* Built in a local and copied once: batch output is written one time. */
    ksi_pte local, *e = &local;
    unsigned maxphy;

    if (!cfg || !out)
        return KSI_ERR_NULL_POINTER;
    if (ksi_paging_levels(mode) == 0)
        return KSI_ERR_BAD_MODE;
    if (level < 1 || level > ksi_paging_levels(mode))
        return KSI_ERR_BAD_LEVEL;
    maxphy = cfg->maxphyaddr ? (unsigned)cfg->maxphyaddr : 52;
    if (cfg->maxphyaddr && (cfg->maxphyaddr < 32 || cfg->maxphyaddr > 52))
        return KSI_ERR_BAD_ARGUMENT;
    if (mode == KSI_PAGING_32BIT && v > 0xFFFFFFFFULL)
        return KSI_ERR_OUT_OF_RANGE;

    memset(e, 0, sizeof *e);
    e->raw = v;
    e->mode = (uint8_t)mode;
    e->level = (uint8_t)level;
    if (!(v & 1)) {
        *out = local;
        return KSI_OK;   /* P=0: every other bit is ignored (SDM 4.7) */
    }

    e->flags = KSI_PF_PRESENT;
    if (v & BIT(1)) e->flags |= KSI_PF_WRITABLE;
    if (v & BIT(2)) e->flags |= KSI_PF_USER;
    if (v & BIT(3)) e->flags |= KSI_PF_PWT;
    if (v & BIT(4)) e->flags |= KSI_PF_PCD;
    if (v & BIT(5)) e->flags |= KSI_PF_ACCESSED;

    if (mode == KSI_PAGING_32BIT)
        decode_32bit(v, cfg, maxphy, e);
    else
        decode_64bit_entry(v, cfg, maxphy, e);

    /* Dirty and Global exist only in entries that map a page. */
    if (e->flags & KSI_PF_LEAF) {
        if (v & BIT(6)) e->flags |= KSI_PF_DIRTY;
        if (v & BIT(8)) e->flags |= KSI_PF_GLOBAL;
    }
    memory_type(cfg->pat_msr, e);
    *out = local;
    return KSI_OK;
}

int ksi_decode_pte_table(const uint8_t *buf, size_t len, const ksi_paging_config *cfg,
                         int mode, int level, ksi_pte *out, size_t count)
{
    size_t width = (mode == KSI_PAGING_32BIT) ? 4 : 8;

    if (!out || !cfg || (!buf && count))
        return KSI_ERR_NULL_POINTER;
    if (count > len / width)
        return KSI_ERR_TRUNCATED;
    for (size_t i = 0; i < count; i++) {
        const uint8_t *p = buf + i * width;
        uint64_t v = 0;
        int rc;
        for (size_t b = 0; b < width; b++)
            v |= (uint64_t)p[b] << (8 * b);
        rc = ksi_decode_pte(v, cfg, mode, level, &out[i]);
        if (rc != KSI_OK)
            return rc;
    }
    return KSI_OK;
}
