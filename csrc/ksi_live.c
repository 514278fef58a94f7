/*
 * ksi_live.c - segment registers, LAR/LSL, the LDT and the descriptor-table
 * registers of the machine the core runs on. See ksi_live.h.
 *
 * Everything architecture-specific sits behind KSI_LIVE_X86 (x86 with
 * GCC-style inline asm) and KSI_LIVE_LINUX (plus Linux system calls); on
 * any other host the functions return KSI_ERR_UNSUPPORTED.
 */
#define _GNU_SOURCE   /* syscall() */

#include "ksi_live.h"

#include <string.h>

/* KSI_LIVE_DISABLE builds the portable fallback on any host (to test it). */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(KSI_LIVE_DISABLE)
#define KSI_LIVE_X86 1
#else
#define KSI_LIVE_X86 0
#endif

#if KSI_LIVE_X86 && defined(__linux__)
#define KSI_LIVE_LINUX 1
#include <errno.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <asm/ldt.h>
#if defined(__x86_64__)
#include <asm/prctl.h>
#endif
#else
#define KSI_LIVE_LINUX 0
#endif

/* Bits of the LAR result (SDM vol. 2A "LAR", vol. 3A Figure 3-8). */
#define AR_ACCESSED   (1u << 8)
#define AR_RW         (1u << 9)    /* data: writable; code: readable */
#define AR_DC         (1u << 10)   /* data: expand-down; code: conforming */
#define AR_CODE       (1u << 11)
#define AR_S          (1u << 12)
#define AR_DPL_SHIFT  13
#define AR_P          (1u << 15)

int ksi_live_supported(void)
{
    return KSI_LIVE_X86;
}

uint64_t ksi_live_features(void)
{
    uint64_t bits = 0;
#if KSI_LIVE_X86
    bits |= KSI_LF_X86;
#if defined(__x86_64__)
    bits |= KSI_LF_X86_64;
#endif
#endif
#if KSI_LIVE_LINUX
    bits |= KSI_LF_LINUX;
#endif
    return bits;
}

#if KSI_LIVE_X86

/* LAR r32, r32: ZF=1 and the masked access rights when the descriptor is
   visible at the current CPL and RPL. */
static void lar_raw(uint32_t selector, uint32_t *access_rights, uint32_t *valid)
{
    uint32_t result = 0;
    unsigned char ok = 0;
    __asm__ volatile("lar %2, %0\n\t"
                     "setz %1"
                     : "+r"(result), "=qm"(ok)
                     : "r"(selector)
                     : "cc");
    *valid = ok;
    *access_rights = ok ? (result & KSI_LIVE_LAR_MASK) : 0;
}

/* LSL r32, r32: ZF=1 and the byte-granular limit. */
static void lsl_raw(uint32_t selector, uint32_t *limit, uint32_t *valid)
{
    uint32_t result = 0;
    unsigned char ok = 0;
    __asm__ volatile("lsl %2, %0\n\t"
                     "setz %1"
                     : "+r"(result), "=qm"(ok)
                     : "r"(selector)
                     : "cc");
    *valid = ok;
    *limit = ok ? result : 0;
}

static uint16_t read_cs(void)
{
    uint16_t v;
    __asm__ volatile("mov %%cs, %0" : "=r"(v));
    return v;
}

#endif /* KSI_LIVE_X86 */

int ksi_live_read_sregs(ksi_live_sregs *out)
{
    if (!out)
        return KSI_ERR_NULL_POINTER;
#if KSI_LIVE_X86
    {
        uint16_t ds, es, fs, gs, ss;
        __asm__ volatile("mov %%ds, %0" : "=r"(ds));
        __asm__ volatile("mov %%es, %0" : "=r"(es));
        __asm__ volatile("mov %%fs, %0" : "=r"(fs));
        __asm__ volatile("mov %%gs, %0" : "=r"(gs));
        __asm__ volatile("mov %%ss, %0" : "=r"(ss));
        out->cs = read_cs();
        out->ds = ds;
        out->es = es;
        out->fs = fs;
        out->gs = gs;
        out->ss = ss;
        return KSI_OK;
    }
#else
    memset(out, 0, sizeof *out);
    return KSI_ERR_UNSUPPORTED;
#endif
}

int ksi_live_fs_gs_base(uint64_t *fs_base, uint64_t *gs_base, uint64_t *os_errno)
{
    if (!fs_base || !gs_base || !os_errno)
        return KSI_ERR_NULL_POINTER;
    *fs_base = 0;
    *gs_base = 0;
    *os_errno = 0;
#if KSI_LIVE_LINUX && defined(__x86_64__)
    {
        unsigned long fs = 0, gs = 0;
        if (syscall(SYS_arch_prctl, ARCH_GET_FS, &fs) != 0
            || syscall(SYS_arch_prctl, ARCH_GET_GS, &gs) != 0) {
            *os_errno = (uint64_t)errno;
            return errno == ENOSYS ? KSI_ERR_UNSUPPORTED : KSI_ERR_BAD_ARGUMENT;
        }
        *fs_base = fs;
        *gs_base = gs;
        return KSI_OK;
    }
#else
    return KSI_ERR_UNSUPPORTED;
#endif
}

int ksi_live_lar(uint64_t selector, uint64_t *access_rights, uint64_t *valid)
{
    if (!access_rights || !valid)
        return KSI_ERR_NULL_POINTER;
    *access_rights = 0;
    *valid = 0;
    if (selector > 0xFFFF)
        return KSI_ERR_OUT_OF_RANGE;
#if KSI_LIVE_X86
    {
        uint32_t ar, ok;
        lar_raw((uint32_t)selector, &ar, &ok);
        *access_rights = ar;
        *valid = ok;
        return KSI_OK;
    }
#else
    return KSI_ERR_UNSUPPORTED;
#endif
}

int ksi_live_lsl(uint64_t selector, uint64_t *limit, uint64_t *valid)
{
    if (!limit || !valid)
        return KSI_ERR_NULL_POINTER;
    *limit = 0;
    *valid = 0;
    if (selector > 0xFFFF)
        return KSI_ERR_OUT_OF_RANGE;
#if KSI_LIVE_X86
    {
        uint32_t lim, ok;
        lsl_raw((uint32_t)selector, &lim, &ok);
        *limit = lim;
        *valid = ok;
        return KSI_OK;
    }
#else
    return KSI_ERR_UNSUPPORTED;
#endif
}

int ksi_live_probe_selectors(const uint64_t *selectors, size_t count, ksi_live_probe *out)
{
    size_t i;
    if (count && (!selectors || !out))
        return KSI_ERR_NULL_POINTER;
    for (i = 0; i < count; i++) {
        if (selectors[i] > 0xFFFF)
            return KSI_ERR_OUT_OF_RANGE;
    }
#if KSI_LIVE_X86
    for (i = 0; i < count; i++) {
        uint32_t ar, ar_ok, lim, lim_ok;
        lar_raw((uint32_t)selectors[i], &ar, &ar_ok);
        lsl_raw((uint32_t)selectors[i], &lim, &lim_ok);
        out[i].selector = selectors[i];
        out[i].ar_valid = ar_ok;
        out[i].access_rights = ar;
        out[i].limit_valid = lim_ok;
        out[i].limit = lim;
    }
    return KSI_OK;
#else
    return KSI_ERR_UNSUPPORTED;
#endif
}

int ksi_live_load_es(uint64_t selector, ksi_live_es_load *out)
{
    if (!out)
        return KSI_ERR_NULL_POINTER;
    memset(out, 0, sizeof *out);
    if (selector > 0xFFFF)
        return KSI_ERR_OUT_OF_RANGE;
#if KSI_LIVE_X86
    {
        uint32_t sel = (uint32_t)selector;
        uint32_t rpl = sel & 3u;
        uint32_t cpl = read_cs() & 3u;
        uint16_t previous = 0, loaded = 0, restored = 0;
        uint32_t ar = 0, lim = 0;
        unsigned char ar_ok = 0, lim_ok = 0;

        /* The null selector (index 0 in the GDT, any RPL) always loads into
           ES. Anything else must pass the checks MOV ES makes (SDM vol. 2B
           "MOV", Operation), or the load would raise #GP / #NP. */
        if ((sel & ~3u) != 0) {
            uint32_t check_ar, check_ok, dpl, priv;
            lar_raw(sel, &check_ar, &check_ok);
            if (!check_ok || !(check_ar & AR_S) || !(check_ar & AR_P))
                return KSI_ERR_BAD_ARGUMENT;
            if ((check_ar & AR_CODE) && !(check_ar & AR_RW))
                return KSI_ERR_BAD_ARGUMENT;            /* execute-only code */
            dpl = (check_ar >> AR_DPL_SHIFT) & 3u;
            priv = rpl > cpl ? rpl : cpl;
            if (!((check_ar & AR_CODE) && (check_ar & AR_DC)) && priv > dpl)
                return KSI_ERR_BAD_ARGUMENT;            /* data or non-conforming code */
        }

        /* One block: nothing the compiler emits may use ES while it holds
           the test selector (i386 string instructions use ES). */
        __asm__ volatile("mov %%es, %[prev]\n\t"
                         "mov %w[sel], %%es\n\t"
                         "mov %%es, %[loaded]\n\t"
                         "lar %[loaded], %[ar]\n\t"
                         "setz %[ar_ok]\n\t"
                         "lsl %[loaded], %[lim]\n\t"
                         "setz %[lim_ok]\n\t"
                         "mov %[prev], %%es\n\t"
                         "mov %%es, %[restored]"
                         : [prev] "=m"(previous), [loaded] "=m"(loaded),
                           [restored] "=m"(restored), [ar_ok] "=m"(ar_ok),
                           [lim_ok] "=m"(lim_ok), [ar] "+&r"(ar), [lim] "+&r"(lim)
                         : [sel] "r"(sel)
                         : "cc", "memory");
        out->previous = previous;
        out->loaded = loaded;
        out->ar_valid = ar_ok;
        out->access_rights = ar_ok ? (ar & KSI_LIVE_LAR_MASK) : 0;
        out->limit_valid = lim_ok;
        out->limit = lim_ok ? lim : 0;
        out->restored = restored;
        return KSI_OK;
    }
#else
    return KSI_ERR_UNSUPPORTED;
#endif
}

int ksi_live_read_ldt(uint8_t *buf, size_t len, size_t *nread, uint64_t *os_errno)
{
    if (!nread || !os_errno || (len && !buf))
        return KSI_ERR_NULL_POINTER;
    *nread = 0;
    *os_errno = 0;
#if KSI_LIVE_LINUX
    {
        long n;
        if (len > (size_t)KSI_LIVE_LDT_ENTRIES * KSI_LIVE_LDT_ENTRY_SIZE)
            len = (size_t)KSI_LIVE_LDT_ENTRIES * KSI_LIVE_LDT_ENTRY_SIZE;
        n = syscall(SYS_modify_ldt, 0, buf, (unsigned long)len);
        if (n < 0) {
            *os_errno = (uint64_t)errno;
            return errno == ENOSYS ? KSI_ERR_UNSUPPORTED : KSI_ERR_BAD_ARGUMENT;
        }
        *nread = (size_t)n > len ? len : (size_t)n;
        return KSI_OK;
    }
#else
    (void)buf;
    (void)len;
    return KSI_ERR_UNSUPPORTED;
#endif
}

int ksi_live_write_ldt(const ksi_live_ldt_request *request, uint64_t *os_errno)
{
    if (!request || !os_errno)
        return KSI_ERR_NULL_POINTER;
    *os_errno = 0;
    if (request->entry_number >= KSI_LIVE_LDT_ENTRIES || request->base_addr > 0xFFFFFFFFu
        || request->limit > 0xFFFFFu || request->seg_32bit > 1 || request->contents > 3
        || request->read_exec_only > 1 || request->limit_in_pages > 1
        || request->seg_not_present > 1 || request->useable > 1 || request->lm > 1)
        return KSI_ERR_OUT_OF_RANGE;
#if KSI_LIVE_LINUX
    {
        struct user_desc desc;
        memset(&desc, 0, sizeof desc);
        desc.entry_number = (unsigned int)request->entry_number;
        desc.base_addr = (unsigned int)request->base_addr;
        desc.limit = (unsigned int)request->limit;
        desc.seg_32bit = (unsigned int)request->seg_32bit;
        desc.contents = (unsigned int)request->contents;
        desc.read_exec_only = (unsigned int)request->read_exec_only;
        desc.limit_in_pages = (unsigned int)request->limit_in_pages;
        desc.seg_not_present = (unsigned int)request->seg_not_present;
        desc.useable = (unsigned int)request->useable;
#if defined(__x86_64__)
        desc.lm = (unsigned int)request->lm;
#endif
        if (syscall(SYS_modify_ldt, 0x11, &desc, (unsigned long)sizeof desc) != 0) {
            *os_errno = (uint64_t)errno;
            return errno == ENOSYS ? KSI_ERR_UNSUPPORTED : KSI_ERR_BAD_ARGUMENT;
        }
        return KSI_OK;
    }
#else
    return KSI_ERR_UNSUPPORTED;
#endif
}

#if KSI_LIVE_X86
/* SGDT/SIDT store a 2-byte limit then a 4-byte (i386) or 8-byte base. */
static void table_register_from(const unsigned char *raw, ksi_live_table_register *out)
{
    uint16_t limit;
    memcpy(&limit, raw, 2);
#if defined(__x86_64__)
    {
        uint64_t base;
        memcpy(&base, raw + 2, 8);
        out->base = base;
    }
#else
    {
        uint32_t base;
        memcpy(&base, raw + 2, 4);
        out->base = base;
    }
#endif
    out->limit = limit;
}
#endif

int ksi_live_sgdt(ksi_live_table_register *out)
{
    if (!out)
        return KSI_ERR_NULL_POINTER;
    out->base = 0;
    out->limit = 0;
#if KSI_LIVE_X86
    {
        unsigned char raw[10];
        memset(raw, 0, sizeof raw);
        __asm__ volatile("sgdt %0" : "=m"(raw));
        table_register_from(raw, out);
        return KSI_OK;
    }
#else
    return KSI_ERR_UNSUPPORTED;
#endif
}

int ksi_live_sidt(ksi_live_table_register *out)
{
    if (!out)
        return KSI_ERR_NULL_POINTER;
    out->base = 0;
    out->limit = 0;
#if KSI_LIVE_X86
    {
        unsigned char raw[10];
        memset(raw, 0, sizeof raw);
        __asm__ volatile("sidt %0" : "=m"(raw));
        table_register_from(raw, out);
        return KSI_OK;
    }
#else
    return KSI_ERR_UNSUPPORTED;
#endif
}

int ksi_live_sldt(uint64_t *selector)
{
    if (!selector)
        return KSI_ERR_NULL_POINTER;
    *selector = 0;
#if KSI_LIVE_X86
    {
        uint16_t v = 0;
        __asm__ volatile("sldt %0" : "=m"(v));
        *selector = v;
        return KSI_OK;
    }
#else
    return KSI_ERR_UNSUPPORTED;
#endif
}

int ksi_live_str(uint64_t *selector)
{
    if (!selector)
        return KSI_ERR_NULL_POINTER;
    *selector = 0;
#if KSI_LIVE_X86
    {
        uint16_t v = 0;
        __asm__ volatile("str %0" : "=m"(v));
        *selector = v;
        return KSI_OK;
    }
#else
    return KSI_ERR_UNSUPPORTED;
#endif
}
