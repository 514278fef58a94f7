/*
 * ksi_pagecache.h - remembered translations of 4 KiB pages, in memory the
 * caller owns.
 *
 * A walk over a mapped image is pure (its bytes cannot change), so the
 * result for one 4 KiB page can be kept for the life of the image mapping.
 * The table is open addressing with linear probing over caller-owned slots;
 * it never allocates: when it is half full ksi_page_cache_put says so
 * (KSI_ERR_CAPACITY) and the caller grows it (ksi_page_cache_move into a
 * larger table) or starts again (ksi_page_cache_clear).
 */
#ifndef KSI_PAGECACHE_H
#define KSI_PAGECACHE_H

#include "ksi_common.h"

/* KSI-CDEF-BEGIN */
/* One remembered page. */
typedef struct {
    uint64_t key;             /* page number + 1; 0: an empty slot */
    uint64_t record;          /* the walk, packed as ksi_translate_packed packs it */
    uint64_t offset;          /* offset in the image buffer of the 4 KiB physical page;
                                 UINT64_MAX when it is not wholly in one run */
} ksi_page_slot;

typedef struct {
    ksi_page_slot *slots;
    uint64_t capacity;        /* slots: a power of two, at least 8 */
    uint64_t count;           /* slots in use (at most capacity / 2) */
} ksi_page_cache;

/* Start an empty table over capacity slots (zeroes them). KSI_ERR_BAD_ARGUMENT
   unless capacity is a power of two of at least 8. */
int ksi_page_cache_init(ksi_page_cache *cache, ksi_page_slot *slots, uint64_t capacity);

/* The slot of page (a page number, below UINT64_MAX), or NULL. */
const ksi_page_slot *ksi_page_cache_find(const ksi_page_cache *cache, uint64_t page);

/* Remember (or replace) page. KSI_ERR_CAPACITY when the table is half full
   and page is not in it (nothing is written: grow or clear, then put again);
   KSI_ERR_BAD_ARGUMENT for page UINT64_MAX. */
int ksi_page_cache_put(ksi_page_cache *cache, uint64_t page, uint64_t record, uint64_t offset);

/* Forget every page. */
void ksi_page_cache_clear(ksi_page_cache *cache);

/* Put every page of from into to (an initialised, larger or emptier table);
   KSI_ERR_CAPACITY when to fills first (to then holds some of them). */
int ksi_page_cache_move(const ksi_page_cache *from, ksi_page_cache *to);
/* KSI-CDEF-END */

#endif
