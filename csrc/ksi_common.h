/*
 * ksi_common.h - status codes shared by every part of the ksinspect C core.
 *
 * The text between the KSI-CDEF markers is also the cffi cdef (build_core.py
 * extracts it), so it may only hold declarations cffi understands: typedefs,
 * enums with literal values and prototypes.
 */
#ifndef KSI_COMMON_H
#define KSI_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* KSI-CDEF-BEGIN */
typedef enum {
    KSI_OK = 0,
    KSI_ERR_NULL_POINTER = 1,
    KSI_ERR_TRUNCATED = 2,
    KSI_ERR_BAD_MODE = 3,
    KSI_ERR_BAD_LEVEL = 4,
    KSI_ERR_OUT_OF_RANGE = 5,
    KSI_ERR_CAPACITY = 6,
    KSI_ERR_UNSUPPORTED = 7,
    KSI_ERR_BAD_ARGUMENT = 8,
    KSI_ERR_DR7_SLOT = 20,
    KSI_ERR_DR7_CONDITION = 21,
    KSI_ERR_DR7_LENGTH = 22,
    KSI_ERR_DR7_EXEC_LENGTH = 23,
    KSI_ERR_DR7_ALIGNMENT = 24,
    KSI_ERR_DR7_LEN8_MODE = 25,
    KSI_ERR_DR7_IO_NEEDS_DE = 26,
    KSI_ERR_DR7_DUPLICATE_SLOT = 27,
    KSI_ERR_DR7_SCOPE = 28
} ksi_status;

/* A fixed English sentence for a status; never NULL. */
const char *ksi_status_message(int status);

/* The package version this core was compiled for (KSI_BUILD_VERSION). */
const char *ksi_build_version(void);
/* KSI-CDEF-END */

#endif
