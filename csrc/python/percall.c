/*
 * percall.c - ksinspect._percall: the per-call hot path of AddressSpace,
 * translate(va) and read(va, n), as CPython methods.
 *
 * Not part of the pure C core (the csrc/ksi_*.c files): this is glue, written against the
 * CPython C API because a cffi call costs more (it drops and takes the GIL,
 * saves errno, unpacks a tuple of arguments) than the whole remembered-page
 * lookup. It holds a ksi_page_cache (csrc/ksi_pagecache.c) of the 4 KiB
 * pages it walked (with ksi_translate_page of csrc/ksi_walk.c, over the
 * ksi_phys that ksinspect/_native/walk.py built and keeps alive), builds a
 * Translation (the Python class, a tuple subclass) straight from a slot, and
 * copies a read that lies in one remembered page straight from the image.
 * Single PagingEntry / SegmentDescriptor decodes come here too (the same
 * C decoders, called without cffi's cost): new_pte / new_descriptor build
 * the whole value (the decode's tuple and the instance's attributes), so a
 * decode from Python is one call into C.
 *
 * Anything else (not an int, not mapped, a read across pages or outside the
 * image, a file that shrank) is handed to the Python methods given at
 * construction, which raise the precise errors: results are the Python
 * path's, only sooner.
 *
 * The image file is checked before every touch of the mapping (fstat of a
 * private dup of its descriptor: one system call), as
 * PhysicalMemory.check_intact does, so a file that shrinks raises
 * ImageFormatError instead of killing the process with SIGBUS.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <sys/stat.h>
#include <sys/types.h>
#ifdef _WIN32
#include <io.h>
#define dup _dup
#define close _close
#define fstat _fstat64
#define stat _stat64
#else
#include <unistd.h>
#endif

#include "ksinspect.h"

#define PAGE_FRAME 0x000FFFFFFFFFF000ULL
#define NOT_IN_BUFFER UINT64_MAX
#define FIRST_CAPACITY 1024

typedef struct {
    PyObject_HEAD
    ksi_page_cache cache;
    uint64_t max_capacity;        /* slots at most; when full, start again */
    const ksi_phys *phys;
    const ksi_paging_config *cfg;
    uint64_t cr3;
    int mode;
    int fd;                       /* a dup of the mapped file's descriptor, or -1 */
    uint64_t file_size;           /* its size when it was opened */
    PyTypeObject *translation;    /* ksinspect.paging.Translation */
    PyObject *space;              /* the AddressSpace */
    PyObject *translate_miss;     /* space._translate_walked(va) */
    PyObject *read_miss;          /* space._read_checked(va, n) */
    PyObject *keep;               /* what owns phys and cfg (the _native Walker) */
} PageCache;

/* The page-size code of ksi_translate_packed (bits 1:0). */
static uint64_t size_code(unsigned shift)
{
    switch (shift) {
    case 21: return 1;
    case 22: return 2;
    case 30: return 3;
    default: return 0;
    }
}

static int intact(const PageCache *self)
{
    struct stat st;
    if (self->fd < 0 || fstat(self->fd, &st) != 0)
        return 1;                 /* as check_intact: a failed fstat is not a shrink */
    return (uint64_t)st.st_size >= self->file_size;
}

/* Make room for one more page: double the table, or start again at the cap. */
static int grow(PageCache *self)
{
    ksi_page_cache bigger;
    ksi_page_slot *slots;
    uint64_t capacity = self->cache.capacity * 2;

    if (capacity > self->max_capacity) {
        ksi_page_cache_clear(&self->cache);
        return 0;
    }
    slots = PyMem_Malloc((size_t)capacity * sizeof *slots);
    if (!slots) {
        PyErr_NoMemory();
        return -1;
    }
    ksi_page_cache_init(&bigger, slots, capacity);
    if (ksi_page_cache_move(&self->cache, &bigger) != KSI_OK) {
        PyMem_Free(slots);        /* cannot happen: twice the room */
        ksi_page_cache_clear(&self->cache);
        return 0;
    }
    PyMem_Free(self->cache.slots);
    self->cache = bigger;
    return 0;
}

/* The slot of va's page, walking and remembering it first if needed.
   NULL and no error: not mapped, or the file shrank (the Python path says
   which). NULL with an error: out of memory. */
static const ksi_page_slot *page_of(PageCache *self, uint64_t va)
{
    const ksi_page_slot *slot = ksi_page_cache_find(&self->cache, va >> 12);
    ksi_translation_brief out;
    uint64_t record, base_offset;
    int rc;

    if (slot)
        return slot;
    if (!intact(self))            /* the walk reads the mapped file */
        return NULL;
    if (ksi_translate_page(self->phys, self->cr3, self->mode, self->cfg, va, &out,
                           &base_offset) != KSI_OK || out.reason != KSI_WALK_OK)
        return NULL;
    record = (out.pa & PAGE_FRAME) | size_code(out.page_shift)
             | (uint64_t)(out.rights & 7) << 2 | (uint64_t)(out.anomalies & 15) << 5;
    rc = ksi_page_cache_put(&self->cache, va >> 12, record, base_offset);
    if (rc == KSI_ERR_CAPACITY) {
        if (grow(self) < 0)
            return NULL;
        rc = ksi_page_cache_put(&self->cache, va >> 12, record, base_offset);
    }
    if (rc != KSI_OK)
        return NULL;
    return ksi_page_cache_find(&self->cache, va >> 12);
}

/* va as a uint64 when it is an exact int that fits; 0 otherwise (no error set). */
static int exact_u64(PyObject *o, uint64_t *out)
{
    if (!PyLong_CheckExact(o))
        return 0;
    *out = PyLong_AsUnsignedLongLong(o);
    if (*out == (uint64_t)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

static PyObject *translate(PageCache *self, PyObject *arg)
{
    uint64_t va;
    const ksi_page_slot *slot;
    PyObject *t, *pa, *page;

    if (!exact_u64(arg, &va))
        return PyObject_CallOneArg(self->translate_miss, arg);
    slot = page_of(self, va);
    if (!slot) {
        if (PyErr_Occurred())
            return NULL;
        return PyObject_CallOneArg(self->translate_miss, arg);
    }
    pa = PyLong_FromUnsignedLongLong((slot->record & PAGE_FRAME) | (va & 0xFFF));
    page = PyLong_FromUnsignedLongLong(slot->record);
    t = self->translation->tp_alloc(self->translation, 5);
    if (!pa || !page || !t) {
        Py_XDECREF(pa);
        Py_XDECREF(page);
        Py_XDECREF(t);
        return NULL;
    }
    /* (va, pa, page, space, walk): the layout of Translation.__new__. */
    Py_INCREF(arg);
    PyTuple_SET_ITEM(t, 0, arg);
    PyTuple_SET_ITEM(t, 1, pa);
    PyTuple_SET_ITEM(t, 2, page);
    Py_INCREF(self->space);
    PyTuple_SET_ITEM(t, 3, self->space);
    Py_INCREF(Py_None);
    PyTuple_SET_ITEM(t, 4, Py_None);
    return t;
}

static PyObject *read_bytes(PageCache *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t va, n;
    const ksi_page_slot *slot;

    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "read() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    /* The hit path: the bytes lie in one mapped 4 KiB page wholly in the image. */
    if (exact_u64(args[0], &va) && exact_u64(args[1], &n) && n <= 0x1000 - (va & 0xFFF)) {
        slot = page_of(self, va);
        if (slot && slot->offset != NOT_IN_BUFFER && intact(self)) {
            uint64_t at = slot->offset + (va & 0xFFF);
            if (at <= self->phys->base_length && n <= self->phys->base_length - at)
                return PyBytes_FromStringAndSize((const char *)self->phys->base + at,
                                                 (Py_ssize_t)n);
        }
        if (PyErr_Occurred())
            return NULL;
    }
    return PyObject_CallFunctionObjArgs(self->read_miss, args[0], args[1], NULL);
}

static PyObject *clear(PageCache *self, PyObject *unused)
{
    (void)unused;
    ksi_page_cache_clear(&self->cache);
    Py_RETURN_NONE;
}

static PyObject *get_count(PageCache *self, void *unused)
{
    (void)unused;
    return PyLong_FromUnsignedLongLong(self->cache.count);
}

static int traverse(PageCache *self, visitproc visit, void *arg)
{
    Py_VISIT(self->translation);
    Py_VISIT(self->space);
    Py_VISIT(self->translate_miss);
    Py_VISIT(self->read_miss);
    Py_VISIT(self->keep);
    return 0;
}

static int clear_refs(PageCache *self)
{
    Py_CLEAR(self->translation);
    Py_CLEAR(self->space);
    Py_CLEAR(self->translate_miss);
    Py_CLEAR(self->read_miss);
    Py_CLEAR(self->keep);
    return 0;
}

static void dealloc(PageCache *self)
{
    PyObject_GC_UnTrack(self);
    clear_refs(self);
    PyMem_Free(self->cache.slots);
    if (self->fd >= 0)
        close(self->fd);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* PageCache(phys, cfg, cr3, mode, max_pages, fd, file_size, translation, space,
             translate_miss, read_miss, keep): phys and cfg are the addresses of
   the ksi_phys and ksi_paging_config that keep owns; fd -1: nothing to watch. */
static PyObject *new_cache(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    unsigned long long phys, cfg, cr3, max_pages, file_size;
    int mode, fd;
    PyObject *translation, *space, *translate_miss, *read_miss, *keep;
    PageCache *self;
    ksi_page_slot *slots;

    if (kwargs && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "PageCache() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "KKKiKiKOOOOO", &phys, &cfg, &cr3, &mode, &max_pages, &fd,
                          &file_size, &translation, &space, &translate_miss, &read_miss,
                          &keep))
        return NULL;
    if (!phys || !cfg || !PyType_Check(translation)
        || !PyType_IsSubtype((PyTypeObject *)translation, &PyTuple_Type)
        || !PyCallable_Check(translate_miss) || !PyCallable_Check(read_miss)
        || max_pages < FIRST_CAPACITY / 2 || (max_pages & (max_pages - 1)) != 0) {
        PyErr_SetString(PyExc_ValueError, "PageCache: bad arguments");
        return NULL;
    }
    slots = PyMem_Malloc(FIRST_CAPACITY * sizeof *slots);
    if (!slots)
        return PyErr_NoMemory();
    self = (PageCache *)type->tp_alloc(type, 0);
    if (!self) {
        PyMem_Free(slots);
        return NULL;
    }
    ksi_page_cache_init(&self->cache, slots, FIRST_CAPACITY);
    self->max_capacity = 2 * (uint64_t)max_pages;       /* kept at most half full */
    self->phys = (const ksi_phys *)(uintptr_t)phys;
    self->cfg = (const ksi_paging_config *)(uintptr_t)cfg;
    self->cr3 = cr3;
    self->mode = mode;
    self->file_size = file_size;
    self->fd = fd >= 0 ? dup(fd) : -1;      /* ours: the image's own may be closed and reused */
    Py_INCREF(translation);
    self->translation = (PyTypeObject *)translation;
    Py_INCREF(space);
    self->space = space;
    Py_INCREF(translate_miss);
    self->translate_miss = translate_miss;
    Py_INCREF(read_miss);
    self->read_miss = read_miss;
    Py_INCREF(keep);
    self->keep = keep;
    return (PyObject *)self;
}

/* --- single decodes ------------------------------------------------------------ */

/* decode_pte(value, config address, mode, level): the ksi_pte struct as bytes,
   an int status when C refused it, or None when an argument is not a plain
   uint64 / int (the caller's checked path says what is wrong). */
static PyObject *decode_pte(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t value, cfg, mode, level;
    ksi_pte out;
    int rc;

    (void)module;
    if (nargs != 4 || !exact_u64(args[0], &value) || !exact_u64(args[1], &cfg) || !cfg
        || !exact_u64(args[2], &mode) || !exact_u64(args[3], &level) || mode > 16
        || level > 16)
        Py_RETURN_NONE;
    rc = ksi_decode_pte(value, (const ksi_paging_config *)(uintptr_t)cfg, (int)mode,
                        (int)level, &out);
    if (rc != KSI_OK)
        return PyLong_FromLong(rc);
    return PyBytes_FromStringAndSize((const char *)&out, sizeof out);
}

/* decode_descriptor(lo, hi or None, mode): as decode_pte, for ksi_decode_descriptor. */
static PyObject *decode_descriptor(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t lo, hi = 0, mode;
    int have_hi;
    ksi_descriptor out;
    int rc;

    (void)module;
    if (nargs != 3 || !exact_u64(args[0], &lo) || !exact_u64(args[2], &mode) || mode > 16)
        Py_RETURN_NONE;
    have_hi = args[1] != Py_None;
    if (have_hi && !exact_u64(args[1], &hi))
        Py_RETURN_NONE;
    rc = ksi_decode_descriptor(lo, hi, have_hi, (int)mode, &out);
    if (rc != KSI_OK)
        return PyLong_FromLong(rc);
    return PyBytes_FromStringAndSize((const char *)&out, sizeof out);
}

/* --- whole values: PagingEntry.decode / SegmentDescriptor.decode ------------------ */

/* The fields of ksi_pte and ksi_descriptor in member order: the tuples built
   below hold them in this order, as ksinspect/_native's struct formats
   unpack them (Python uses these builders only when the names agree). */
static const char *const PTE_NAMES[] = {"raw", "frame", "page_size", "reserved_bits", "flags",
                                        "anomalies", "mode", "level", "pkey", "pat_index",
                                        "memory_type", NULL};
static const char *const DESCRIPTOR_NAMES[] = {
    "raw_lo", "raw_hi", "slot_offset", "base", "offset", "limit", "range_first", "range_last",
    "flags", "anomalies", "raw_limit", "selector", "width", "kind", "type", "dpl", "size", "ist",
    "param_count", NULL};

static PyObject *names_tuple(const char *const *names)
{
    Py_ssize_t n = 0;
    PyObject *t;
    while (names[n])
        n++;
    t = PyTuple_New(n);
    for (Py_ssize_t i = 0; t && i < n; i++) {
        PyObject *name = PyUnicode_InternFromString(names[i]);
        if (!name) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, name);
    }
    return t;
}

/* Ints that most decodes hold (page sizes, IA32_PAT's default, the flat
   limits), made once: each saves an allocation and its free per decode. */
static uint64_t COMMON[] = {1ULL << 12, 1ULL << 21, 1ULL << 22, 1ULL << 30, 0xFFFFFFFFULL,
                            0xFFFFFULL, 0xFFFFULL, 0 /* set at import */};
#define N_COMMON (sizeof COMMON / sizeof COMMON[0])
static PyObject *common_ints[N_COMMON];   /* the last: IA32_PAT's default */

static PyObject *int_of(uint64_t v)
{
    if (v > 256)
        for (size_t i = 0; i < N_COMMON; i++)
            if (COMMON[i] == v && common_ints[i]) {
                Py_INCREF(common_ints[i]);
                return common_ints[i];
            }
    return PyLong_FromUnsignedLongLong(v);
}

/* A tuple of n ints from n uint64 values; item 0 is first (an int equal to
   values[0]: the argument it was decoded from) when not NULL. */
static PyObject *int_tuple(const uint64_t *values, Py_ssize_t n, PyObject *first)
{
    PyObject *t = PyTuple_New(n);
    if (!t)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v;
        if (i == 0 && first) {
            Py_INCREF(first);
            v = first;
        } else {
            v = int_of(values[i]);
        }
        if (!v) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

static PyObject *empty_args;      /* () for object.__new__ */

/* object.__new__(cls), then object.__setattr__(obj, keys[i], values[i]) for
   each of the n attributes (bypassing a frozen dataclass's __setattr__, as
   the Python path does): the instance keeps them in its inline values (no
   dict is made unless asked for), which costs less than building its
   __dict__. NULL with an error on failure. */
static PyObject *instance(PyTypeObject *cls, PyObject *keys, PyObject *const *values,
                          Py_ssize_t n)
{
    PyObject *obj = PyBaseObject_Type.tp_new(cls, empty_args, NULL);
    if (!obj)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        if (PyObject_GenericSetAttr(obj, PyTuple_GET_ITEM(keys, i), values[i]) < 0) {
            Py_DECREF(obj);
            return NULL;
        }
    return obj;
}

/* A spec tuple (made once by the Python side) checked for its shape. */
static int spec_ok(PyObject *spec, Py_ssize_t n_keys)
{
    PyObject *keys;
    if (!PyTuple_CheckExact(spec) || PyTuple_GET_SIZE(spec) != 3
        || !PyDict_CheckExact(PyTuple_GET_ITEM(spec, 2)))
        return 0;
    keys = PyTuple_GET_ITEM(spec, 1);
    if (!PyTuple_CheckExact(keys) || PyTuple_GET_SIZE(keys) != n_keys)
        return 0;
    for (Py_ssize_t i = 0; i < n_keys; i++)
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(keys, i)))
            return 0;
    return 1;
}

#define PTE_KEYS 9

/* new_pte(spec, raw, mode, level, maxphyaddr, pat, pse, nxe, address): the
   PagingEntry that PagingEntry.decode builds, or None where that method's
   own path must run (an argument that is not a plain int / bool, a mode or
   level it does not know, a decode the C core refuses: it raises the
   precise error). spec = (PagingEntry, its attribute names in order, the
   mode table {key: (PagingMode, C mode, levels)}).
   pat None means IA32_PAT's default, as the method says. */
static PyObject *new_pte(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *spec, *info, *values[PTE_KEYS], *decoded, *obj;
    uint64_t raw, level, maxphyaddr, pat, code, fields[11];
    ksi_paging_config cfg;
    ksi_pte out;
    int contains;

    (void)module;
    if (nargs != 9 || !spec_ok(args[0], PTE_KEYS)
        || !PyType_Check(PyTuple_GET_ITEM(args[0], 0)))
        Py_RETURN_NONE;
    spec = args[0];
    info = PyDict_GetItemWithError(PyTuple_GET_ITEM(spec, 2), args[2]);
    if (!info) {
        PyErr_Clear();            /* unknown or unhashable: the method says which */
        Py_RETURN_NONE;
    }
    if (!PyTuple_CheckExact(info) || PyTuple_GET_SIZE(info) != 3
        || !PyAnySet_Check(PyTuple_GET_ITEM(info, 2)))
        Py_RETURN_NONE;
    contains = PySet_Contains(PyTuple_GET_ITEM(info, 2), args[3]);
    if (contains != 1) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (args[5] == Py_None)
        pat = ksi_pat_default();
    else if (!exact_u64(args[5], &pat))
        Py_RETURN_NONE;
    if (!exact_u64(args[1], &raw) || !exact_u64(args[3], &level) || level > 16
        || !exact_u64(args[4], &maxphyaddr) || !exact_u64(PyTuple_GET_ITEM(info, 1), &code)
        || code > 16 || (args[6] != Py_True && args[6] != Py_False)
        || (args[7] != Py_True && args[7] != Py_False))
        Py_RETURN_NONE;
    cfg.maxphyaddr = maxphyaddr;
    cfg.pat_msr = pat;
    cfg.options = (args[6] == Py_True ? KSI_PO_PSE : 0) | (args[7] == Py_True ? KSI_PO_NXE : 0);
    if (ksi_decode_pte(raw, &cfg, (int)code, (int)level, &out) != KSI_OK)
        Py_RETURN_NONE;
    fields[0] = out.raw;
    fields[1] = out.frame;
    fields[2] = out.page_size;
    fields[3] = out.reserved_bits;
    fields[4] = out.flags;
    fields[5] = out.anomalies;
    fields[6] = out.mode;
    fields[7] = out.level;
    fields[8] = out.pkey;
    fields[9] = out.pat_index;
    fields[10] = out.memory_type;
    decoded = int_tuple(fields, 11, args[1]);     /* out.raw is raw */
    if (!decoded)
        return NULL;
    /* raw, mode, level, maxphyaddr, pat_msr, pse, nxe, address, _d */
    values[0] = args[1];
    values[1] = PyTuple_GET_ITEM(info, 0);
    values[2] = args[3];
    values[3] = args[4];
    values[4] = args[5] == Py_None ? NULL : args[5];
    values[5] = args[6];
    values[6] = args[7];
    values[7] = args[8];
    values[8] = decoded;
    if (!values[4]) {
        values[4] = int_of(pat);
        if (!values[4]) {
            Py_DECREF(decoded);
            return NULL;
        }
    } else {
        Py_INCREF(values[4]);
    }
    obj = instance((PyTypeObject *)PyTuple_GET_ITEM(spec, 0), PyTuple_GET_ITEM(spec, 1), values,
                   PTE_KEYS);
    Py_DECREF(values[4]);
    Py_DECREF(decoded);
    return obj;
}

#define DESCRIPTOR_KEYS 5

/* new_descriptor(spec, raw, raw_high, mode, address): the value that
   SegmentDescriptor.decode builds, or None as new_pte. spec = (the class
   of each ksi_descriptor_kind, as a tuple; the attribute names in order:
   raw, mode, address, _d, raw_high; the mode table {key: (DescriptorMode,
   C mode)}). */
static PyObject *new_descriptor(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *spec, *info, *classes, *cls, *values[DESCRIPTOR_KEYS], *decoded, *obj;
    uint64_t lo, hi = 0, code, fields[19];
    int have_hi;
    ksi_descriptor out;

    (void)module;
    if (nargs != 5 || !spec_ok(args[0], DESCRIPTOR_KEYS)
        || !PyTuple_CheckExact(PyTuple_GET_ITEM(args[0], 0)))
        Py_RETURN_NONE;
    spec = args[0];
    info = PyDict_GetItemWithError(PyTuple_GET_ITEM(spec, 2), args[3]);
    if (!info) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (!PyTuple_CheckExact(info) || PyTuple_GET_SIZE(info) != 2
        || !exact_u64(PyTuple_GET_ITEM(info, 1), &code) || code > 16 || !exact_u64(args[1], &lo))
        Py_RETURN_NONE;
    have_hi = args[2] != Py_None;
    if (have_hi && !exact_u64(args[2], &hi))
        Py_RETURN_NONE;
    if (ksi_decode_descriptor(lo, hi, have_hi, (int)code, &out) != KSI_OK)
        Py_RETURN_NONE;
    classes = PyTuple_GET_ITEM(spec, 0);
    if (out.kind >= PyTuple_GET_SIZE(classes) || !PyType_Check(PyTuple_GET_ITEM(classes, out.kind)))
        Py_RETURN_NONE;
    cls = PyTuple_GET_ITEM(classes, out.kind);
    fields[0] = out.raw_lo;
    fields[1] = out.raw_hi;
    fields[2] = out.slot_offset;
    fields[3] = out.base;
    fields[4] = out.offset;
    fields[5] = out.limit;
    fields[6] = out.range_first;
    fields[7] = out.range_last;
    fields[8] = out.flags;
    fields[9] = out.anomalies;
    fields[10] = out.raw_limit;
    fields[11] = out.selector;
    fields[12] = out.width;
    fields[13] = out.kind;
    fields[14] = out.type;
    fields[15] = out.dpl;
    fields[16] = out.size;
    fields[17] = out.ist;
    fields[18] = out.param_count;
    decoded = int_tuple(fields, 19, args[1]);     /* out.raw_lo is lo */
    if (!decoded)
        return NULL;
    /* raw (the decode's raw_lo), mode, address, _d, raw_high (the decode's raw_hi
       when the descriptor has an upper half) */
    values[0] = PyTuple_GET_ITEM(decoded, 0);
    values[1] = PyTuple_GET_ITEM(info, 0);
    values[2] = args[4];
    values[3] = decoded;
    values[4] = out.flags & KSI_DF_HAS_UPPER ? PyTuple_GET_ITEM(decoded, 1) : Py_None;
    obj = instance((PyTypeObject *)cls, PyTuple_GET_ITEM(spec, 1), values, DESCRIPTOR_KEYS);
    Py_DECREF(decoded);
    return obj;
}

/* --- views of C records ------------------------------------------------------------ */

#define VIEW_ROWS 256             /* rows per slice: their indexes are cached small ints */

/* record_views(cls, rows, size): a list holding, for each size-byte record of
   the memoryview rows, cls((slice, i)) where slice = the rows of its block of
   VIEW_ROWS and i its row in the block. One allocation per record (the index
   is a cached small int, the slice is shared). cls is a tuple subclass whose
   instances hold only the slice and the index: they cannot be part of a
   cycle, so they are left out of the garbage collector, which would otherwise
   walk every one of a whole address space's ranges again and again. */
static PyObject *record_views(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyTypeObject *cls;
    Py_ssize_t length, size, count;
    PyObject *list;

    (void)module;
    if (nargs != 3 || !PyType_Check(args[0]) || !PyMemoryView_Check(args[1])
        || !PyLong_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "record_views(cls, memoryview, size)");
        return NULL;
    }
    cls = (PyTypeObject *)args[0];
    if (!PyType_IsSubtype(cls, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "record_views: cls must be a tuple subclass");
        return NULL;
    }
    size = PyLong_AsSsize_t(args[2]);
    length = PyObject_Length(args[1]);
    if (size <= 0 || length < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "record_views: bad record size");
        return NULL;
    }
    count = length / size;
    list = PyList_New(count);
    if (!list)
        return NULL;
    for (Py_ssize_t first = 0; first < count; first += VIEW_ROWS) {
        Py_ssize_t rows = count - first < VIEW_ROWS ? count - first : VIEW_ROWS;
        PyObject *slice = PySequence_GetSlice(args[1], first * size, (first + rows) * size);
        if (!slice) {
            Py_DECREF(list);
            return NULL;
        }
        for (Py_ssize_t i = 0; i < rows; i++) {
            PyObject *index = PyLong_FromSsize_t(i);
            PyObject *obj = index ? cls->tp_alloc(cls, 2) : NULL;
            if (!obj) {
                Py_XDECREF(index);
                Py_DECREF(slice);
                Py_DECREF(list);
                return NULL;
            }
            if (PyType_IS_GC(cls))
                PyObject_GC_UnTrack(obj);
            Py_INCREF(slice);
            PyTuple_SET_ITEM(obj, 0, slice);
            PyTuple_SET_ITEM(obj, 1, index);
            PyList_SET_ITEM(list, first + i, obj);
        }
        Py_DECREF(slice);
    }
    return list;
}

static PyMethodDef module_methods[] = {
    {"record_views", (PyCFunction)(void (*)(void))record_views, METH_FASTCALL,
     "record_views(cls, rows, size): cls((slice, i)) for every record of rows"},
    {"decode_pte", (PyCFunction)(void (*)(void))decode_pte, METH_FASTCALL,
     "decode_pte(value, config, mode, level): ksi_decode_pte's struct as bytes"},
    {"decode_descriptor", (PyCFunction)(void (*)(void))decode_descriptor, METH_FASTCALL,
     "decode_descriptor(lo, hi, mode): ksi_decode_descriptor's struct as bytes"},
    {"new_pte", (PyCFunction)(void (*)(void))new_pte, METH_FASTCALL,
     "new_pte(spec, raw, mode, level, maxphyaddr, pat, pse, nxe, address): a PagingEntry"},
    {"new_descriptor", (PyCFunction)(void (*)(void))new_descriptor, METH_FASTCALL,
     "new_descriptor(spec, raw, raw_high, mode, address): a SegmentDescriptor or Gate"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef methods[] = {
    {"translate", (PyCFunction)translate, METH_O,
     "translate(va): the Translation of va (AddressSpace.translate)"},
    {"read", (PyCFunction)(void (*)(void))read_bytes, METH_FASTCALL,
     "read(va, n): n bytes at va (AddressSpace.read)"},
    {"clear", (PyCFunction)clear, METH_NOARGS, "forget every remembered page"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef getset[] = {
    {"pages", (getter)get_count, NULL, "pages remembered", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PageCacheType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ksinspect._percall.PageCache",
    .tp_basicsize = sizeof(PageCache),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Remembered 4 KiB page translations of one AddressSpace, and its hot path.",
    .tp_new = new_cache,
    .tp_dealloc = (destructor)dealloc,
    .tp_traverse = (traverseproc)traverse,
    .tp_clear = (inquiry)clear_refs,
    .tp_methods = methods,
    .tp_getset = getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ksinspect._percall",
    "The per-call hot path of ksinspect.paging.AddressSpace (see csrc/python/percall.c).",
    -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__percall(void)
{
    PyObject *m;
    if (PyType_Ready(&PageCacheType) < 0)
        return NULL;
    if (!empty_args && !(empty_args = PyTuple_New(0)))
        return NULL;
    COMMON[N_COMMON - 1] = ksi_pat_default();
    for (size_t i = 0; i < N_COMMON; i++)
        if (!common_ints[i] && !(common_ints[i] = PyLong_FromUnsignedLongLong(COMMON[i])))
            return NULL;
    m = PyModule_Create(&module);
    if (!m)
        return NULL;
    Py_INCREF(&PageCacheType);
    if (PyModule_AddObject(m, "PageCache", (PyObject *)&PageCacheType) < 0
        || PyModule_AddObject(m, "PTE_FIELDS", names_tuple(PTE_NAMES)) < 0
        || PyModule_AddObject(m, "DESCRIPTOR_FIELDS", names_tuple(DESCRIPTOR_NAMES)) < 0
        || PyModule_AddStringConstant(m, "BUILD_VERSION", KSI_BUILD_VERSION) < 0) {
        Py_DECREF(&PageCacheType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
