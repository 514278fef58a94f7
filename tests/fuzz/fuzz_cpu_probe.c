/* The privileged-instruction probe: ksi_cpu_probe_encoding over any
   instruction number and output capacity, ksi_cpu_probe_run over invalid
   numbers, NULL, and (when the input asks) one real run of RDTSC, HLT or
   SMSW at CPL 3. Invariants: unknown numbers are refused with
   KSI_ERR_BAD_ARGUMENT and leave the result zeroed; an encoding is 1-3 bytes,
   starts with 0F (or is HLT, CLI, STI, IN or OUT), and is refused with KSI_ERR_CAPACITY
   when it does not fit; a run reports either completion or a signal, never
   both (SDM vol. 3A §5.9). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reader r = fz_reader_of(data, size);
    int which = (int)(int32_t)fz_u32(&r);
    size_t capacity = fz_u8(&r) % 6;
    uint8_t mode = fz_u8(&r);
    uint8_t bytes[8];
    size_t length = 99;
    ksi_cpu_probe result;
    int rc;

    memset(bytes, 0xAA, sizeof bytes);
    rc = ksi_cpu_probe_encoding(which, bytes, capacity, &length);
    if (which < 0 || which >= KSI_PI_COUNT) {
        FZ_CHECK(rc == KSI_ERR_BAD_ARGUMENT && length == 0);
    } else if (rc == KSI_OK) {
        FZ_CHECK(length >= 1 && length <= 3 && length <= capacity);
        FZ_CHECK(bytes[0] == 0x0F || (which == KSI_PI_HLT && bytes[0] == 0xF4) ||
                 (which >= KSI_PI_CLI && which <= KSI_PI_OUT));
    } else {
        FZ_CHECK(rc == KSI_ERR_CAPACITY && length == 0);
    }
    FZ_CHECK(ksi_cpu_probe_encoding(which, NULL, capacity, &length) == KSI_ERR_NULL_POINTER);
    FZ_CHECK(ksi_cpu_probe_run(which, NULL) == KSI_ERR_NULL_POINTER);

    if (which < 0 || which >= KSI_PI_COUNT) {
        memset(&result, 0x55, sizeof result);
        FZ_CHECK(ksi_cpu_probe_run(which, &result) == KSI_ERR_BAD_ARGUMENT);
        FZ_CHECK(result.faulted == 0 && result.signal == 0 && result.value == 0);
    }
    if (mode & 1) {
        static const int safe[] = {KSI_PI_RDTSC, KSI_PI_HLT, KSI_PI_SMSW};
        int chosen = safe[(mode >> 1) % 3];
        rc = ksi_cpu_probe_run(chosen, &result);
        FZ_CHECK(rc == KSI_OK || rc == KSI_ERR_UNSUPPORTED);
        if (rc == KSI_OK) {
            FZ_CHECK(result.instruction == (uint64_t)chosen);
            FZ_CHECK(result.faulted ? result.signal != 0 : result.signal == 0);
            if (chosen == KSI_PI_HLT)
                FZ_CHECK(result.faulted && result.trapno == 13);
        }
    }
    return 0;
}
