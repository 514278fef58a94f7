/* Debug registers: ksi_decode_dr7 / ksi_decode_dr6, their batch forms, and
   ksi_encode_dr7 over any requests. Invariants: batches equal single
   decodes; a DR7 the encoder accepts decodes back to the requests, with no
   anomaly (SDM 17.2.4, 17.2.5). */
#include "fuzz_common.h"

#define MAX_COUNT 256

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ksi_dr7 dr7s[MAX_COUNT];
    static ksi_dr6 dr6s[MAX_COUNT];
    static uint64_t values[MAX_COUNT];
    fz_reader r = fz_reader_of(data, size);
    uint64_t options = fz_u8(&r) & 31;
    size_t nreq = fz_u8(&r) % 6, count, failed = 99;
    ksi_dr7_request req[5];
    ksi_dr7 d7;
    ksi_dr6 d6;
    uint64_t dr7 = 1;
    int rc;

    for (size_t i = 0; i < nreq; i++) {
        uint8_t b = fz_u8(&r);
        req[i].slot = b & 7;                 /* 4..7: invalid slots */
        req[i].condition = (b >> 3) & 7;     /* 4..7: invalid */
        req[i].scope = (b >> 6) & 3;         /* 0: invalid */
        req[i].length = fz_u8(&r) % 10;
        req[i].has_address = fz_u8(&r) & 1;
        req[i].address = fz_u64(&r);
    }
    rc = ksi_encode_dr7(req, nreq, options, &dr7, &failed);
    if (rc == KSI_OK) {
        FZ_CHECK(ksi_decode_dr7(dr7, options, &d7) == KSI_OK);
        FZ_CHECK(d7.anomalies == 0 && d7.reserved_bits == 0);
        for (size_t i = 0; i < nreq; i++) {
            uint64_t s = req[i].slot;
            FZ_CHECK(((d7.local >> s) & 1) == (req[i].scope & KSI_DR_LOCAL ? 1u : 0u));
            FZ_CHECK(((d7.global >> s) & 1) == (req[i].scope & KSI_DR_GLOBAL ? 1u : 0u));
            FZ_CHECK(d7.condition[s] == req[i].condition && d7.length[s] == req[i].length);
        }
    } else {
        FZ_CHECK(nreq > 0 && failed < nreq && dr7 == 0);
        FZ_CHECK(ksi_status_message(rc) != NULL);
    }

    count = 0;
    while (count < MAX_COUNT && r.pos < r.size)
        values[count++] = fz_u64(&r);
    FZ_CHECK(ksi_decode_dr7_batch(values, count, options, dr7s) == KSI_OK);
    FZ_CHECK(ksi_decode_dr6_batch(values, count, dr6s) == KSI_OK);
    for (size_t i = 0; i < count; i++) {
        FZ_CHECK(ksi_decode_dr7(values[i], options, &d7) == KSI_OK);
        FZ_CHECK(memcmp(&d7, &dr7s[i], sizeof d7) == 0);
        FZ_CHECK(ksi_decode_dr6(values[i], &d6) == KSI_OK);
        FZ_CHECK(memcmp(&d6, &dr6s[i], sizeof d6) == 0);
        FZ_CHECK(d6.hits == (values[i] & 15));
    }
    return 0;
}
