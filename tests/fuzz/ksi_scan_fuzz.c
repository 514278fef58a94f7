/* Random specs and buffers through ksi_scan and ksi_scan_match, for a
   sanitizer build (tests/test_psscan.py compiles it with ASan + UBSan).
   Each buffer is malloc'ed at its exact length, so a read past its end is
   reported. Argument: iterations. Prints "ok" and exits 0 when clean. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ksi_scan.h"

static unsigned long long state = 88172645463325252ULL;

static unsigned long long next(void)
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

int main(int argc, char **argv)
{
    static const uint32_t lengths[] = {1, 2, 3, 4, 8, 16, 0, 300};
    static const uint64_t aligns[] = {1, 2, 4, 8, 16, 3, 0, 8192};
    long iterations = argc > 1 ? atol(argv[1]) : 100000;

    for (long it = 0; it < iterations; it++) {
        size_t len = next() % 300;
        uint8_t *buf = malloc(len ? len : 1);
        ksi_scan_check checks[4];
        ksi_scan_spec spec;
        ksi_scan_cursor cursor;
        uint64_t out[3];
        size_t count;
        unsigned n = next() % 5;

        for (size_t i = 0; i < len; i++)
            buf[i] = (next() & 1) ? 3 : (uint8_t)next();
        for (unsigned i = 0; i < n; i++) {
            checks[i].offset = next() % 80;
            checks[i].length = lengths[next() % 8];
            checks[i].kind = next() % 6;
            checks[i].flags = next() & 1;
            checks[i].a = next() % 20;
            checks[i].b = next();
        }
        spec.size = next() % 100;
        spec.align = aligns[next() % 8];
        spec.anchor_offset = next() % 100;
        spec.anchor_mask = (next() & 1) ? 0xFF : (uint32_t)next();
        spec.anchor_value = (next() & 1) ? 3 : (uint32_t)next() & 0xFF;
        spec.check_count = n;
        spec.checks = checks;
        memset(&cursor, 0, sizeof cursor);
        for (int k = 0; k < 200; k++) {
            int rc = ksi_scan(len ? buf : NULL, len, next() % 64, next() % 400, &spec, &cursor,
                              out, 1 + next() % 3, &count);
            if (rc != KSI_OK || cursor.done)
                break;
        }
        ksi_scan_match(buf, len, &spec);
        free(buf);
    }
    puts("ok");
    return 0;
}
