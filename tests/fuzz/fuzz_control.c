/* Control registers: ksi_control_layout, ksi_decode_control and its batch,
   ksi_cpu_operating_mode, over any kind (valid or not) and any values.
   Invariants: an unknown kind is refused with KSI_ERR_BAD_ARGUMENT; the batch
   equals single decodes; flags are raw & defined; reserved_bits are exactly the
   bits outside the defined ones plus a must-be-one bit that is clear, and
   set the RESERVED_BITS anomaly; the operating mode is one of the five, the
   paging code 0..4 and the address width 20, 32, 48 or 57 (SDM vol. 3A
   §2.2, §2.5, §4.7; vol. 1 §3.4.3). */
#include "fuzz_common.h"

#define MAX_COUNT 256

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ksi_control batch[MAX_COUNT];
    static uint64_t values[MAX_COUNT];
    fz_reader r = fz_reader_of(data, size);
    int kind = (int)(fz_u8(&r) % 8) - 1;          /* -1 and 5..6: invalid kinds */
    uint64_t cr0 = fz_u64(&r), cr4 = fz_u64(&r), efer = fz_u64(&r), rflags = fz_u64(&r);
    uint64_t cs_long = fz_u8(&r) & 1, defined = 0, one = 0;
    size_t count = 0;
    ksi_control one_value;
    ksi_cpu_state state;
    int valid = kind >= KSI_REG_CR0 && kind <= KSI_REG_PF_ERROR;
    int rc;

    FZ_CHECK(ksi_cpu_operating_mode(cr0, cr4, efer, rflags, cs_long, &state) == KSI_OK);
    FZ_CHECK(state.mode <= KSI_CPU_64BIT && state.paging <= 4);
    FZ_CHECK(state.address_bits == 20 || state.address_bits == 32 || state.address_bits == 48 ||
             state.address_bits == 57);
    FZ_CHECK((state.paging != 0) == ((cr0 >> 31) & 1));
    FZ_CHECK(ksi_cpu_operating_mode(cr0, cr4, efer, rflags, cs_long, NULL) ==
             KSI_ERR_NULL_POINTER);

    while (count < MAX_COUNT && r.pos < r.size)
        values[count++] = fz_u64(&r);

    rc = ksi_control_layout(kind, &defined, &one);
    FZ_CHECK(rc == (valid ? KSI_OK : KSI_ERR_BAD_ARGUMENT));
    FZ_CHECK(ksi_control_layout(kind, NULL, &one) == KSI_ERR_NULL_POINTER);
    rc = ksi_decode_control_batch(kind, values, count, batch);
    FZ_CHECK(rc == (valid ? KSI_OK : KSI_ERR_BAD_ARGUMENT));
    FZ_CHECK(ksi_decode_control_batch(kind, NULL, count, batch) ==
             (count ? KSI_ERR_NULL_POINTER : rc));
    if (!valid) {
        FZ_CHECK(ksi_decode_control(kind, cr0, &one_value) == KSI_ERR_BAD_ARGUMENT);
        return 0;
    }
    FZ_CHECK((one & ~defined) == 0);
    for (size_t i = 0; i < count; i++) {
        uint64_t v = values[i];
        FZ_CHECK(ksi_decode_control(kind, v, &one_value) == KSI_OK);
        FZ_CHECK(memcmp(&one_value, &batch[i], sizeof one_value) == 0);
        FZ_CHECK(one_value.raw == v && one_value.kind == (uint64_t)kind);
        FZ_CHECK(one_value.flags == (v & defined) && one_value.defined == defined);
        FZ_CHECK(one_value.reserved_bits == ((v & ~defined) | (~v & one)));
        FZ_CHECK(((one_value.anomalies & KSI_CA_RESERVED_BITS) != 0) ==
                 (one_value.reserved_bits != 0));
        FZ_CHECK(one_value.iopl == (kind == KSI_REG_RFLAGS ? (v >> 12) & 3 : 0));
    }
    FZ_CHECK(ksi_decode_control(kind, cr0, NULL) == KSI_ERR_NULL_POINTER);
    return 0;
}
