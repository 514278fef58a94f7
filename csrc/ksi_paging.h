/*
 * ksi_paging.h - paging-structure entries in every x86 paging mode.
 *
 * Rules from the Intel SDM vol. 3A chapter 4: 4.3 (32-bit paging, with
 * PSE and PSE-36), 4.4 (PAE), 4.5 (4-level and 5-level), 4.6.2 (protection
 * keys), 4.9.2 (memory type through PAT / PCD / PWT) and 11.12 (the PAT MSR).
 */
#ifndef KSI_PAGING_H
#define KSI_PAGING_H

#include "ksi_common.h"

/* KSI-CDEF-BEGIN */
enum ksi_paging_mode {
    KSI_PAGING_32BIT = 0,
    KSI_PAGING_PAE = 1,
    KSI_PAGING_4LEVEL = 2,
    KSI_PAGING_5LEVEL = 3
};

/* Options of a ksi_paging_config. */
enum ksi_paging_option {
    KSI_PO_PSE = 1,    /* CR4.PSE: 4 MiB pages in 32-bit paging */
    KSI_PO_NXE = 2,    /* IA32_EFER.NXE: bit 63 is XD, not reserved */
    KSI_PO_WP = 4      /* CR0.WP: supervisor writes obey R/W (walks) */
};

/* Bits of ksi_pte.flags, named after the manual's fields. */
enum ksi_pte_flag {
    KSI_PF_PRESENT = 1,
    KSI_PF_WRITABLE = 2,
    KSI_PF_USER = 4,
    KSI_PF_PWT = 8,
    KSI_PF_PCD = 16,
    KSI_PF_ACCESSED = 32,
    KSI_PF_DIRTY = 64,
    KSI_PF_LARGE = 128,     /* PS: this entry maps a page, not a table */
    KSI_PF_GLOBAL = 256,
    KSI_PF_PAT = 512,
    KSI_PF_NX = 1024,       /* XD */
    KSI_PF_LEAF = 2048      /* present and maps a page */
};

enum ksi_pte_anomaly {
    KSI_PA_RESERVED_PHYS = 1,     /* address bits at or above MAXPHYADDR set */
    KSI_PA_RESERVED_LEVEL = 2,    /* bits reserved at this level / page size set */
    KSI_PA_XD_RESERVED = 4,       /* bit 63 set while IA32_EFER.NXE = 0 (or PAE PDPTE) */
    KSI_PA_RESERVED_MEMTYPE = 8   /* the selected PAT entry holds a reserved type */
};

/* PAT memory-type encodings (SDM Table 11-10). */
enum ksi_memory_type {
    KSI_MT_UC = 0, KSI_MT_WC = 1, KSI_MT_WT = 4, KSI_MT_WP = 5, KSI_MT_WB = 6,
    KSI_MT_UC_MINUS = 7
};

typedef struct {
    uint64_t maxphyaddr;   /* 1..52; 0 means 52 */
    uint64_t pat_msr;      /* IA32_PAT */
    uint64_t options;      /* enum ksi_paging_option bits */
} ksi_paging_config;

/* Widest members first: no inner padding (see ksi_descriptor). */
typedef struct {
    uint64_t raw;
    uint64_t frame;          /* physical address of the page or next table */
    uint64_t page_size;      /* bytes mapped by a leaf entry, 0 otherwise */
    uint64_t reserved_bits;  /* the reserved bits that are set */
    uint32_t flags;          /* enum ksi_pte_flag bits */
    uint32_t anomalies;      /* enum ksi_pte_anomaly bits */
    uint8_t mode;
    uint8_t level;           /* 1 = PTE, 2 = PDE, 3 = PDPTE, 4 = PML4E, 5 = PML5E */
    uint8_t pkey;            /* bits 62:59 of 4/5-level leaf entries */
    uint8_t pat_index;       /* PAT*4 + PCD*2 + PWT */
    uint8_t memory_type;     /* the PAT entry selected (enum ksi_memory_type); 0xFF reserved */
} ksi_pte;

/* IA32_PAT at power-on and reset (SDM Table 11-12). */
uint64_t ksi_pat_default(void);

/* The number of levels of a mode, or 0 for an unknown mode. */
int ksi_paging_levels(int mode);

int ksi_decode_pte(uint64_t value, const ksi_paging_config *cfg, int mode, int level,
                   ksi_pte *out);

/* Decode count entries of the mode's entry size (4 or 8 bytes) from buf. */
int ksi_decode_pte_table(const uint8_t *buf, size_t len, const ksi_paging_config *cfg,
                         int mode, int level, ksi_pte *out, size_t count);
/* KSI-CDEF-END */

#endif
