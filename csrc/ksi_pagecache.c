/*
 * ksi_pagecache.c - remembered 4 KiB page translations (see ksi_pagecache.h).
 *
 * Keys are page numbers of linear addresses, which cluster (the direct map,
 * one process's heap): a multiplicative hash spreads them over the slots,
 * and the table is kept at most half full so a probe ends within a few slots.
 * Every probe loop is also bounded by the capacity, so a table handed over
 * in a bad state (count lying about the slots) cannot loop forever.
 */
#include <string.h>

#include "ksi_pagecache.h"

static uint64_t slot_of(const ksi_page_cache *cache, uint64_t page)
{
    uint64_t h = page * 0x9E3779B97F4A7C15ULL;
    return (h ^ (h >> 29)) & (cache->capacity - 1);
}

static int usable(const ksi_page_cache *cache)
{
    return cache && cache->slots && cache->capacity >= 8
           && (cache->capacity & (cache->capacity - 1)) == 0;
}

int ksi_page_cache_init(ksi_page_cache *cache, ksi_page_slot *slots, uint64_t capacity)
{
    if (!cache || !slots)
        return KSI_ERR_NULL_POINTER;
    if (capacity < 8 || (capacity & (capacity - 1)) != 0
        || capacity > SIZE_MAX / sizeof *slots)
        return KSI_ERR_BAD_ARGUMENT;
    cache->slots = slots;
    cache->capacity = capacity;
    cache->count = 0;
    memset(slots, 0, (size_t)capacity * sizeof *slots);
    return KSI_OK;
}

const ksi_page_slot *ksi_page_cache_find(const ksi_page_cache *cache, uint64_t page)
{
    uint64_t key = page + 1, mask, i;

    if (!usable(cache) || key == 0)
        return NULL;
    mask = cache->capacity - 1;
    i = slot_of(cache, page);
    for (uint64_t probes = 0; probes < cache->capacity; probes++, i = (i + 1) & mask) {
        const ksi_page_slot *s = &cache->slots[i];
        if (s->key == key)
            return s;
        if (s->key == 0)
            return NULL;
    }
    return NULL;
}

int ksi_page_cache_put(ksi_page_cache *cache, uint64_t page, uint64_t record, uint64_t offset)
{
    uint64_t key = page + 1, mask, i;

    if (!cache)
        return KSI_ERR_NULL_POINTER;
    if (!usable(cache) || key == 0)
        return KSI_ERR_BAD_ARGUMENT;
    mask = cache->capacity - 1;
    i = slot_of(cache, page);
    for (uint64_t probes = 0; probes < cache->capacity; probes++, i = (i + 1) & mask) {
        ksi_page_slot *s = &cache->slots[i];
        if (s->key == key) {
            s->record = record;
            s->offset = offset;
            return KSI_OK;
        }
        if (s->key == 0) {
            if (cache->count >= cache->capacity / 2)
                return KSI_ERR_CAPACITY;
            s->key = key;
            s->record = record;
            s->offset = offset;
            cache->count++;
            return KSI_OK;
        }
    }
    return KSI_ERR_CAPACITY;      /* no empty slot: count lied about the slots */
}

void ksi_page_cache_clear(ksi_page_cache *cache)
{
    if (!usable(cache))
        return;
    memset(cache->slots, 0, (size_t)cache->capacity * sizeof *cache->slots);
    cache->count = 0;
}

int ksi_page_cache_move(const ksi_page_cache *from, ksi_page_cache *to)
{
    if (!from || !to)
        return KSI_ERR_NULL_POINTER;
    if (!usable(from) || !usable(to))
        return KSI_ERR_BAD_ARGUMENT;
    for (uint64_t i = 0; i < from->capacity; i++) {
        const ksi_page_slot *s = &from->slots[i];
        int rc;
        if (s->key == 0)
            continue;
        rc = ksi_page_cache_put(to, s->key - 1, s->record, s->offset);
        if (rc != KSI_OK)
            return rc;
    }
    return KSI_OK;
}
