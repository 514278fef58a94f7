"""A declarative reference for the access checks, written from the SDM's
wording (not from ksinspect/access.py), for the differential tests.

Paging (Intel SDM vol. 3A §4.6.1, "Determination of Access Rights"): the
manual lists, for each kind of access, when it is allowed; §4.6.2 adds
protection keys; §4.7 says how the error code is formed.

Segmentation (§3.4.5.1, §5.3): the valid offsets of a segment, and the
type rules of §5.4.1.
"""


def ref_page_allowed(user_page, writable, nx, access, mode, wp, smep, smap, ac, implicit,
                     nxe, pae, pke, ia32e, pkey, pkru):
    """(allowed, pk_violation) for a present translation.

    mode: "user" or "supervisor". The sentences follow §4.6.1's lists.
    """
    xd = nx and nxe and pae
    if mode == "supervisor":
        if access == "execute":
            # "Instruction fetches from user-mode addresses: not allowed if SMEP=1";
            # "from supervisor-mode addresses: allowed unless XD".
            ok = not (user_page and smep) and not xd
        elif access == "read":
            # "Data reads from user-mode pages: if SMAP=0 allowed; if SMAP=1, allowed
            # for explicit accesses with AC=1, not for implicit ones or AC=0."
            ok = not user_page or not smap or (not implicit and ac)
        else:
            # Writes: to supervisor-mode addresses, WP=0 any, WP=1 only R/W=1.
            # To user-mode addresses: as for reads for SMAP, then the WP rule.
            smap_ok = not user_page or not smap or (not implicit and ac)
            ok = smap_ok and (not wp or writable)
    else:
        if not user_page:
            ok = False        # "User-mode accesses to supervisor-mode addresses are not allowed"
        elif access == "execute":
            ok = not xd
        elif access == "read":
            ok = True
        else:
            ok = writable
    pk = False
    if ok and pke and ia32e and user_page and access != "execute" and pkey is not None \
            and pkru is not None:
        ad = pkru >> (2 * pkey) & 1
        wd = pkru >> (2 * pkey + 1) & 1
        if ad or (access == "write" and wd and (mode == "user" or wp)):
            ok, pk = False, True
    return ok, pk


def ref_error_code(present, access, mode, pk, rsvd, nxe, pae, smep):
    """§4.7: P, W/R, U/S, RSVD, I/D (only with NXE under PAE/IA-32e, or SMEP), PK."""
    code = 1 if present else 0
    if access == "write":
        code |= 2
    if mode == "user":
        code |= 4
    if rsvd:
        code |= 8 | 1
    if access == "execute" and ((nxe and pae) or smep):
        code |= 16
    if pk:
        code |= 32
    return code


def ref_valid_offsets(raw_limit, g, expand_down, b):
    """§3.4.5.1: the limit in bytes (G scales by 4 KiB, low 12 bits 1s) and the range."""
    limit = (raw_limit << 12) | 0xFFF if g else raw_limit
    if not expand_down:
        return 0, limit
    top = 0xFFFFFFFF if b else 0xFFFF
    return limit + 1, top


def ref_segment_access(type_, raw_limit, g, b, offset, size, access):
    """(ok, reason) for an access through a loaded data or code segment (§5.3, §5.4.1)."""
    code = bool(type_ & 8)
    if code:
        readable = bool(type_ & 2)
        if access == "write":
            return False, "type"
        if access == "read" and not readable:
            return False, "type"
        expand_down = False
    else:
        if access == "execute":
            return False, "type"
        if access == "write" and not type_ & 2:
            return False, "type"
        expand_down = bool(type_ & 4)
    first, last = ref_valid_offsets(raw_limit, g, expand_down, b)
    end = offset + size - 1
    if offset < first or end > last:
        return False, "limit"
    return True, ""
