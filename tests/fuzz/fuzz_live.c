/* The live helpers that take arbitrary input and cannot change the process
   for good: LAR / LSL on one selector and in a batch, loading any selector
   into ES (checked with LAR first, then restored), reading the LDT into a
   buffer of any length. (Writing the LDT, and SGDT/SIDT/SLDT/STR, which
   fault under UMIP, are left to tests/test_live_linux.py.)
   Invariants: the batch equals single LAR/LSL (but for the limit of
   Linux's per-CPU segment, which moves with the thread); ES is restored;
   a selector wider than 16 bits is refused; the LDT read fits the buffer. */
#include "fuzz_common.h"

#define MAX_COUNT 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint64_t selectors[MAX_COUNT];
    static ksi_live_probe probes[MAX_COUNT];
    static uint8_t ldt[4096];
    fz_reader r = fz_reader_of(data, size);
    size_t count = 0, len = fz_u16(&r) % (sizeof ldt + 1), nread = 99999;
    uint64_t os_errno, value, valid;
    ksi_live_es_load es;
    int rc;

    if (!ksi_live_supported())
        return 0;
    while (count < MAX_COUNT && r.pos < r.size) {
        uint64_t s = fz_u32(&r);
        selectors[count++] = s & 0x10000 ? s : (s & 0xFFFF);   /* some too wide */
    }
    rc = ksi_live_probe_selectors(selectors, count, probes);
    if (rc != KSI_OK)
        FZ_CHECK(rc == KSI_ERR_OUT_OF_RANGE);
    for (size_t i = 0; i < count && rc == KSI_OK; i++) {
        FZ_CHECK(ksi_live_lar(selectors[i], &value, &valid) == KSI_OK);
        FZ_CHECK(valid == probes[i].ar_valid && value == probes[i].access_rights);
        FZ_CHECK((value & ~(uint64_t)KSI_LIVE_LAR_MASK) == 0);
        FZ_CHECK(ksi_live_lsl(selectors[i], &value, &valid) == KSI_OK);
        FZ_CHECK(valid == probes[i].limit_valid);
        /* Linux x86-64's GDT entry 15 (GDT_ENTRY_CPUNODE, selector 0x7b) has
           the CPU and node numbers in its limit, for vgetcpu: LSL on it
           changes when the thread moves to another CPU between two calls. */
        if ((selectors[i] >> 3) != 15)
            FZ_CHECK(value == probes[i].limit);
    }
    if (count) {
        rc = ksi_live_load_es(selectors[0], &es);
        if (selectors[0] > 0xFFFF)
            FZ_CHECK(rc == KSI_ERR_OUT_OF_RANGE);
        else if (rc == KSI_OK)
            FZ_CHECK(es.restored == es.previous);
    }
    rc = ksi_live_read_ldt(ldt, len, &nread, &os_errno);
    if (rc == KSI_OK)
        FZ_CHECK(nread <= len);
    return 0;
}
