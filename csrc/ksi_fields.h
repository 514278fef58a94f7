/*
 * ksi_fields.h - extract named fields of many records from one buffer.
 *
 * Python turns a structure layout (member offsets and sizes for one Windows
 * build) into an array of field specs, and gives the start offsets of the
 * records to read (e.g. every _EPROCESS candidate a scan found). One call
 * fills a record_count x field_count matrix of 64-bit values, row-major.
 *
 * Every read is inside [buf, buf + length): a record whose field would end
 * past the buffer gets KSI_ERR_TRUNCATED in its status byte and 0 for that
 * field, never an out-of-bounds read. Nothing here allocates, prints or does
 * I/O.
 */
#ifndef KSI_FIELDS_H
#define KSI_FIELDS_H

#include "ksi_common.h"

/* KSI-CDEF-BEGIN */
enum ksi_field_flag {
    KSI_FIELD_SIGNED = 1      /* sign-extend to 64 bits (two's complement in the uint64) */
};

/* One field: `size` bytes (1, 2, 4, 8) little-endian at `offset` from the
   record's start; with bit_length > 0 only bits
   [bit_position, bit_position + bit_length) of that value (20 bytes). */
typedef struct {
    uint32_t offset;
    uint32_t size;
    uint32_t flags;           /* enum ksi_field_flag */
    uint32_t bit_position;
    uint32_t bit_length;      /* 0: the whole value */
} ksi_field_spec;

/* KSI_OK when every spec is usable: size 1, 2, 4 or 8, known flags, and a
   bit range inside the value (bit_position + bit_length <= 8 * size). */
int ksi_fields_validate(const ksi_field_spec *fields, size_t field_count);

/* For each record r (starting at byte starts[r] of buf) and field f, write
   the value to out[r * field_count + f], and KSI_OK or KSI_ERR_TRUNCATED to
   status[r]. out holds record_count * field_count values, status
   record_count bytes. Returns KSI_OK, or the ksi_fields_validate status, or
   KSI_ERR_NULL_POINTER, KSI_ERR_CAPACITY (record_count * field_count
   overflows). */
int ksi_extract_fields(const uint8_t *buf, size_t length,
                       const ksi_field_spec *fields, size_t field_count,
                       const uint64_t *starts, size_t record_count,
                       uint64_t *out, uint8_t *status);
/* KSI-CDEF-END */

#endif
