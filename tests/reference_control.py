"""A plain-Python reference for the control-register decoders, written from
the manuals (not from csrc/ksi_control.c), for the differential tests.

CR0 and CR4: Intel SDM vol. 3A §2.5, Figure 2-7 (CR4 LASS bit 27 and LAM_SUP
bit 28 from the Intel ISE, FRED bit 32 from the FRED specification);
IA32_EFER: SDM vol. 3A §2.2.1 plus AMD APM vol. 2 §3.1.7; RFLAGS: SDM
vol. 1 §3.4.3, Figure 3-8; the #PF error code: SDM vol. 3A §4.7, Figure 4-12.
"""

NAMES = {
    "cr0": {0: "pe", 1: "mp", 2: "em", 3: "ts", 4: "et", 5: "ne", 16: "wp", 18: "am",
            29: "nw", 30: "cd", 31: "pg"},
    "cr4": {0: "vme", 1: "pvi", 2: "tsd", 3: "de", 4: "pse", 5: "pae", 6: "mce", 7: "pge",
            8: "pce", 9: "osfxsr", 10: "osxmmexcpt", 11: "umip", 12: "la57", 13: "vmxe",
            14: "smxe", 16: "fsgsbase", 17: "pcide", 18: "osxsave", 19: "kl", 20: "smep",
            21: "smap", 22: "pke", 23: "cet", 24: "pks", 25: "uintr", 27: "lass",
            28: "lam_sup", 32: "fred"},
    "efer": {0: "sce", 8: "lme", 10: "lma", 11: "nxe", 12: "svme", 13: "lmsle", 14: "ffxsr",
             15: "tce", 17: "mcommit", 18: "intwb", 20: "uaie", 21: "aibrse"},
    "rflags": {0: "cf", 2: "pf", 4: "af", 6: "zf", 7: "sf", 8: "tf", 9: "if", 10: "df",
               11: "of", 14: "nt", 16: "rf", 17: "vm", 18: "ac", 19: "vif", 20: "vip",
               21: "id"},
    "pf": {0: "present", 1: "write", 2: "user", 3: "rsvd", 4: "fetch", 5: "pk",
           6: "shadow_stack", 7: "hlat", 15: "sgx"},
}
ALWAYS_ONE = {"rflags": 1 << 1}


def defined_mask(register):
    mask = 0
    for bit in NAMES[register]:
        mask |= 1 << bit
    if register == "rflags":
        mask |= (1 << 12) | (1 << 13) | ALWAYS_ONE["rflags"]
    return mask


def ref_control(register, raw):
    """What to_dict() must say about raw (anomaly names as the library spells them)."""
    bit = lambda n: bool(raw >> n & 1)   # noqa: E731
    out = {"register": register, "raw": raw,
           "flags": [name.replace("_", "-") for n, name in sorted(NAMES[register].items())
                     if bit(n)]}
    for n, name in NAMES[register].items():
        out[name] = bit(n)
    if register == "rflags":
        out["iopl"] = raw >> 12 & 3
        pairs = ((11, "ov", "nv"), (10, "dn", "up"), (9, "ei", "di"), (7, "ng", "pl"),
                 (6, "zr", "nz"), (4, "ac", "na"), (2, "pe", "po"), (0, "cy", "nc"))
        out["debugger"] = " ".join(["iopl=%d" % out["iopl"]] + [
            a if bit(n) else b for n, a, b in pairs])
    one = ALWAYS_ONE.get(register, 0)
    reserved = (raw & ~defined_mask(register) & (2 ** 64 - 1)) | (one & ~raw)
    out["reserved_bits"] = reserved
    anomalies = []
    if reserved:
        anomalies.append("reserved-bits")
    if register == "cr0":
        if bit(31) and not bit(0):
            anomalies.append("pg-without-pe")
        if bit(29) and not bit(30):
            anomalies.append("nw-without-cd")
    if register == "efer" and bit(10) and not bit(8):
        anomalies.append("lma-without-lme")
    if register == "pf":
        if bit(3) and not bit(0):
            anomalies.append("rsvd-not-present")
        if bit(4) and bit(1):
            anomalies.append("fetch-write")
        if bit(5) and not bit(0):
            anomalies.append("pk-not-present")
    out["anomalies"] = anomalies
    return out


def ref_operating_mode(cr0, cr4, efer, rflags, cs_long):
    """(mode name, paging mode or None, address bits) from SDM vol. 3A §2.2 and Table 4-1."""
    pe, pg = cr0 & 1, cr0 >> 31 & 1
    lma = efer >> 10 & 1
    if lma:
        mode = "long_64bit" if cs_long else "compatibility"
    elif not pe:
        mode = "real"
    else:
        mode = "virtual_8086" if rflags >> 17 & 1 else "protected"
    if not pg:
        paging = None
    elif lma:
        paging = "5level" if cr4 >> 12 & 1 else "4level"
    else:
        paging = "pae" if cr4 >> 5 & 1 else "32"
    if mode == "long_64bit":
        bits = 57 if cr4 >> 12 & 1 else 48
    elif mode in ("real", "virtual_8086"):
        bits = 20
    else:
        bits = 32
    return mode, paging, bits
