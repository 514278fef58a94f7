/* ksi_control.c - CR0, CR4, IA32_EFER, RFLAGS and the #PF error code (see the header). */
#include <string.h>

#include "ksi_control.h"

/* CR0: PE MP EM TS ET NE (5:0), WP (16), AM (18), NW CD PG (31:29); SDM Figure 2-7. */
#define CR0_DEFINED 0xE005003FULL
#define CR0_PE (1ULL << 0)
#define CR0_WP (1ULL << 16)
#define CR0_NW (1ULL << 29)
#define CR0_CD (1ULL << 30)
#define CR0_PG (1ULL << 31)
/* CR4: bits 14:0 and 25:16 (SDM Figure 2-7), LASS (27) and LAM_SUP (28) from the
   Intel ISE, FRED (32) from the FRED specification. */
#define CR4_DEFINED (0x7FFFULL | 0x3FF0000ULL | (1ULL << 27) | (1ULL << 28) | (1ULL << 32))
#define CR4_PAE (1ULL << 5)
#define CR4_LA57 (1ULL << 12)
#define CR4_PCIDE (1ULL << 17)
#define CR4_CET (1ULL << 23)
/* IA32_EFER: SCE (0), LME (8), LMA (10), NXE (11) in the SDM; AMD adds SVME,
   LMSLE, FFXSR, TCE (15:12), MCOMMIT (17), INTWB (18), UAIE (20), AIBRSE (21). */
#define EFER_DEFINED 0x36FD01ULL
#define EFER_LME (1ULL << 8)
#define EFER_LMA (1ULL << 10)
/* RFLAGS: CF, 1, PF, AF, ZF..OF, IOPL, NT (14:6), RF VM AC VIF VIP ID (21:16);
   bit 1 is always 1, bits 3, 5, 15 and 63:22 are 0 (SDM vol. 1 Figure 3-8). */
#define RFLAGS_DEFINED 0x3F7FD7ULL
#define RFLAGS_FIXED (1ULL << 1)
#define RFLAGS_VM (1ULL << 17)
/* #PF error code: P W/R U/S RSVD I/D PK SS HLAT (7:0), SGX (15); SDM Figure 4-12. */
#define PF_DEFINED 0x80FFULL
#define PF_P (1ULL << 0)
#define PF_W (1ULL << 1)
#define PF_RSVD (1ULL << 3)
#define PF_ID (1ULL << 4)
#define PF_PK (1ULL << 5)

int ksi_control_layout(int kind, uint64_t *defined, uint64_t *must_be_one)
{
    static const uint64_t masks[] = {CR0_DEFINED, CR4_DEFINED, EFER_DEFINED, RFLAGS_DEFINED,
                                     PF_DEFINED};
    if (!defined || !must_be_one)
        return KSI_ERR_NULL_POINTER;
    if (kind < KSI_REG_CR0 || kind > KSI_REG_PF_ERROR)
        return KSI_ERR_BAD_ARGUMENT;
    *defined = masks[kind];
    *must_be_one = kind == KSI_REG_RFLAGS ? RFLAGS_FIXED : 0;
    return KSI_OK;
}

int ksi_decode_control(int kind, uint64_t v, ksi_control *d)
{
    uint64_t defined, one;
    int status;

    if (!d)
        return KSI_ERR_NULL_POINTER;
    status = ksi_control_layout(kind, &defined, &one);
    if (status)
        return status;
    memset(d, 0, sizeof *d);
    d->raw = v;
    d->kind = (uint64_t)kind;
    d->defined = defined;
    d->flags = v & defined;
    d->reserved_bits = (v & ~defined) | (~v & one);
    if (d->reserved_bits)
        d->anomalies |= KSI_CA_RESERVED_BITS;
    switch (kind) {
    case KSI_REG_CR0:
        if ((v & CR0_PG) && !(v & CR0_PE)) d->anomalies |= KSI_CA_PG_WITHOUT_PE;
        if ((v & CR0_NW) && !(v & CR0_CD)) d->anomalies |= KSI_CA_NW_WITHOUT_CD;
        break;
    case KSI_REG_EFER:
        if ((v & EFER_LMA) && !(v & EFER_LME)) d->anomalies |= KSI_CA_LMA_WITHOUT_LME;
        break;
    case KSI_REG_RFLAGS:
        d->iopl = (v >> 12) & 3;
        break;
    case KSI_REG_PF_ERROR:
        if ((v & PF_RSVD) && !(v & PF_P)) d->anomalies |= KSI_CA_RSVD_NOT_PRESENT;
        if ((v & PF_PK) && !(v & PF_P)) d->anomalies |= KSI_CA_PK_NOT_PRESENT;
        if ((v & PF_ID) && (v & PF_W)) d->anomalies |= KSI_CA_FETCH_WRITE;
        break;
    default:
        break;
    }
    return KSI_OK;
}

int ksi_decode_control_batch(int kind, const uint64_t *values, size_t count, ksi_control *out)
{
    uint64_t defined, one;
    int status;

    if (!out || (!values && count))
        return KSI_ERR_NULL_POINTER;
    status = ksi_control_layout(kind, &defined, &one);
    if (status)
        return status;
    for (size_t i = 0; i < count; i++)
        ksi_decode_control(kind, values[i], &out[i]);
    return KSI_OK;
}

int ksi_cpu_operating_mode(uint64_t cr0, uint64_t cr4, uint64_t efer, uint64_t rflags,
                           uint64_t cs_long, ksi_cpu_state *s)
{
    int ia32e = (efer & EFER_LMA) != 0;

    if (!s)
        return KSI_ERR_NULL_POINTER;
    memset(s, 0, sizeof *s);
    if (ia32e)
        s->mode = cs_long ? KSI_CPU_64BIT : KSI_CPU_COMPATIBILITY;
    else if (!(cr0 & CR0_PE))
        s->mode = KSI_CPU_REAL;
    else
        s->mode = (rflags & RFLAGS_VM) ? KSI_CPU_VIRTUAL_8086 : KSI_CPU_PROTECTED;

    /* Paging (SDM vol. 3A §4.1.1, Table 4-1): off, 32-bit, PAE, 4-level, 5-level. */
    if (cr0 & CR0_PG) {
        if (ia32e)
            s->paging = 1 + ((cr4 & CR4_LA57) ? 3 : 2);
        else
            s->paging = 1 + ((cr4 & CR4_PAE) ? 1 : 0);
    }
    switch (s->mode) {
    case KSI_CPU_64BIT:
        s->address_bits = (cr4 & CR4_LA57) ? 57 : 48;
        break;
    case KSI_CPU_REAL:
    case KSI_CPU_VIRTUAL_8086:
        s->address_bits = 20;     /* segment * 16 + offset */
        break;
    default:
        s->address_bits = 32;
        break;
    }

    if (ia32e && !(cr0 & CR0_PG)) s->anomalies |= KSI_SA_LMA_WITHOUT_PG;
    if (ia32e && !(cr4 & CR4_PAE)) s->anomalies |= KSI_SA_LMA_WITHOUT_PAE;
    if (ia32e && !(efer & EFER_LME)) s->anomalies |= KSI_SA_LMA_WITHOUT_LME;
    if (!ia32e && (efer & EFER_LME) && (cr0 & CR0_PG)) s->anomalies |= KSI_SA_LME_PG_WITHOUT_LMA;
    if (!ia32e && (cr4 & CR4_PCIDE)) s->anomalies |= KSI_SA_PCIDE_OUTSIDE_IA32E;
    if ((cr4 & CR4_CET) && !(cr0 & CR0_WP)) s->anomalies |= KSI_SA_CET_WITHOUT_WP;
    if (ia32e && (rflags & RFLAGS_VM)) s->anomalies |= KSI_SA_VM_IN_IA32E;
    if ((cr0 & CR0_PG) && !(cr0 & CR0_PE)) s->anomalies |= KSI_SA_PG_WITHOUT_PE;
    return KSI_OK;
}
