/* ksi_common.c - status messages and the build version stamp. */
#include "ksi_common.h"

#ifndef KSI_BUILD_VERSION
#error "KSI_BUILD_VERSION must be defined by the build (csrc/build_core.py)"
#endif

const char *ksi_status_message(int status)
{
    switch (status) {
    case KSI_OK: return "ok";
    case KSI_ERR_NULL_POINTER: return "a required pointer was NULL";
    case KSI_ERR_TRUNCATED: return "the data is shorter than the structure it must hold";
    case KSI_ERR_BAD_MODE: return "unknown mode";
    case KSI_ERR_BAD_LEVEL: return "this paging level does not exist in this mode";
    case KSI_ERR_OUT_OF_RANGE: return "value too wide for its field";
    case KSI_ERR_CAPACITY: return "output array too small";
    case KSI_ERR_UNSUPPORTED: return "not supported on this machine";
    case KSI_ERR_BAD_ARGUMENT: return "invalid argument";
    case KSI_ERR_DR7_SLOT: return "debug-register slot must be 0, 1, 2 or 3";
    case KSI_ERR_DR7_CONDITION: return "condition must be execute, write, io or readwrite";
    case KSI_ERR_DR7_LENGTH: return "length must be 1, 2, 4 or 8 bytes";
    case KSI_ERR_DR7_EXEC_LENGTH:
        return "an execute breakpoint must have length 1 (SDM 17.2.4: R/W=00 requires LEN=00)";
    case KSI_ERR_DR7_ALIGNMENT:
        return "the address must be aligned to the breakpoint length (SDM 17.2.5)";
    case KSI_ERR_DR7_LEN8_MODE:
        return "length 8 is only defined in 64-bit mode (SDM 17.2.4, LEN=10)";
    case KSI_ERR_DR7_IO_NEEDS_DE:
        return "I/O breakpoints need CR4.DE=1; with CR4.DE=0 R/W=10 is undefined (SDM 17.2.4)";
    case KSI_ERR_DR7_DUPLICATE_SLOT: return "the same slot was given twice";
    case KSI_ERR_DR7_SCOPE: return "scope must be local, global or both";
    default: return "unknown status";
    }
}

const char *ksi_build_version(void)
{
    return KSI_BUILD_VERSION;
}
