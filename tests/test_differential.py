"""Differential tests: the C-backed values against tests/reference_model.py.

Random 64-bit inputs (plus hand-picked edge cases) go through both the
ksinspect decoders and the plain Python reference written from the SDM; the
to_dict() outputs must agree field for field. Batch decoders are compared with
one-by-one decodes, and encode_dr7 with the reference encoder and DR7.decode.

Two input classes once hit bugs found by these tests (a legacy null
descriptor with a non-zero next qword; PAE bits 62:52 not reserved); both
are fixed and stay covered here and by known-answer tests.
"""
import struct

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from ksinspect.errors import EncodeError
from ksinspect.x86 import (DR6, DR7, Breakpoint, Condition, PagingEntry, SegmentDescriptor,
                           decode_descriptor_table, decode_paging_entries, encode_dr7)

from reference_model import (MODE_LEVELS, RefEncodeError, mask, ref_descriptor, ref_dr6, ref_dr7,
                             ref_encode_dr7, ref_paging, ref_selector)

# database=None: nothing is written outside tests/ (.hypothesis/); deadline=None:
# slow CI machines must not turn into flaky failures.
FAST = settings(max_examples=250, deadline=None, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow])
MEDIUM = settings(FAST, max_examples=500)

U64 = (1 << 64) - 1
u64 = st.one_of(
    st.integers(0, U64),
    # sparse and dense values, where single fields stand out
    st.lists(st.integers(0, 63), max_size=6).map(lambda bs: sum({1 << b for b in bs})),
    st.lists(st.integers(0, 63), max_size=6).map(lambda bs: U64 ^ sum({1 << b for b in bs})),
)
# Canonical-boundary halves for base 63:32 / offset 63:32 of 16-byte descriptors.
upper_dword = st.sampled_from([0, 0xFFFFFFFF, 0x00007FFF, 0x00008000, 0xFFFF8000, 0xFFFF7FFF,
                               0x00FF0000, 0x00800000, 0xFF7FFFFF, 0xFFFFFE00])


@st.composite
def descriptor_lo(draw):
    """A low qword: fully random, or with a chosen S/type/P so every kind shows up."""
    lo = draw(u64)
    if draw(st.booleans()):
        lo &= ~(0xFF << 40)
        lo |= draw(st.integers(0, 15)) << 40 | draw(st.integers(0, 1)) << 44
        lo |= draw(st.integers(0, 3)) << 45 | draw(st.integers(0, 1)) << 47
    return lo


@st.composite
def descriptor_hi(draw):
    """None (upper half missing), random, or a plausible upper half with a few bits set."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return None
    if choice == 1:
        return draw(u64)
    extra = draw(st.lists(st.integers(32, 63), max_size=2).map(lambda bs: sum({1 << b for b in bs})))
    return draw(upper_dword) | extra


def compare(got, expected):
    """to_dict() against the reference, skipping only the free-text type_name."""
    got = dict(got)
    got.pop("type_name", None)
    got.pop("address", None)
    assert got == expected


# ---------------------------------------------------------------- selectors ---

@FAST
@given(st.integers(0, 0xFFFF))
@example(0)
@example(0xFFFF)
@example(0x33)
@example(0x4)
def test_selector(value):
    from ksinspect.x86 import Selector
    assert Selector.decode(value).to_dict() == ref_selector(value)


# -------------------------------------------------------------- descriptors ---

@MEDIUM
@given(descriptor_lo(), descriptor_hi(), st.sampled_from(["legacy", "long"]))
@example(0, None, "legacy")
@example(0, None, "long")
@example(0, 0, "long")
@example(0, 5, "long")                                       # not null: "upper 8 bytes" slot
@example(0x00AF9B000000FFFF, None, "long")                   # Linux __KERNEL_CS
@example(0x00AF9B000000FFFF, None, "legacy")                 # L reserved outside IA-32e
@example(0x00EF9B000000FFFF, None, "long")                   # L and D
@example(0x00008B0030004087, 0xFFFFFE00, "long")             # QEMU guest TSS
@example(0x00008B0030004087, None, "long")                   # upper missing
@example(0x81C08E0000100990, 0x00008000, "long")             # non-canonical gate offset
@example(0x81C08E0000100990, 0xFFFF8000, "long")             # canonical boundary
@example(0x0000920000000FFF | (6 << 40), None, "legacy")     # 16-bit expand-down
@example(0x00CF960000000000, None, "legacy")                 # 32-bit expand-down, G=1
@example(0x000096000000FFFF, None, "legacy")                 # empty expand-down range
@example(0x8000EC0300081234, None, "legacy")                 # call gate, 3 params
@example(0x0000850000500000, None, "legacy")                 # task gate
@example(0x0000850000500000, 0, "long")                      # type 5 reserved in IA-32e
def test_descriptor(lo, hi, mode):
    compare(SegmentDescriptor.decode(lo, hi, mode=mode).to_dict(), ref_descriptor(lo, hi, mode))


@FAST
@given(descriptor_lo(), st.one_of(st.none(), u64), st.sampled_from(["legacy", "long"]))
def test_descriptor_from_bytes(lo, hi, mode):
    assume(not (mode == "legacy" and lo == 0 and hi))
    data = struct.pack("<Q", lo) if hi is None else struct.pack("<2Q", lo, hi)
    assert SegmentDescriptor.from_bytes(data, mode).to_dict() == \
        SegmentDescriptor.decode(lo, hi, mode=mode).to_dict()


def walk_table(qwords, mode, table):
    """(offset, lo, hi) of each entry, sized by the reference model."""
    out, i = [], 0
    while i < len(qwords):
        lo = qwords[i]
        two = mode == "long" and (table == "interrupts" or (
            table == "segments" and ref_descriptor(lo, None, mode)["size"] == 16))
        if two:
            out.append((8 * i, lo, qwords[i + 1] if i + 1 < len(qwords) else None))
            i += 2
        else:
            out.append((8 * i, lo, None))
            i += 1
    return out


@FAST
@given(st.lists(descriptor_lo(), max_size=12), st.sampled_from(["legacy", "long"]),
       st.sampled_from(["segments", "interrupts", "flat"]),
       st.one_of(st.none(), st.sampled_from([0, 0xFFFFFE0000001000, 0x8003F000])))
@example([0, 0x00AF9B000000FFFF, 0x00008B0030004087, 0xFFFFFE00], "long", "segments", None)
@example([0x00008B0030004087], "long", "segments", 0x1000)    # TSS cut off at the end
@example([0x81C08E0000100990, 0xFFFFFFFF, 0x81C08E0000100990], "long", "interrupts", None)
def test_descriptor_table(qwords, mode, table, base):
    data = struct.pack("<%dQ" % len(qwords), *qwords)
    batch = decode_descriptor_table(data, mode, table=table, base_address=base)
    expected = walk_table(qwords, mode, table)
    assert len(batch) == len(expected)
    rows = list(batch)
    if rows:
        assert batch[-1].to_dict() == rows[-1].to_dict()
    for entry, (offset, lo, hi) in zip(rows, expected):
        assert entry.slot_offset == offset
        assert entry.address == (None if base is None else base + offset)
        single = SegmentDescriptor.decode(lo, hi, mode=mode).to_dict()
        got = entry.to_dict()
        got.pop("address", None)
        assert got == single


# ----------------------------------------------------------- paging entries ---

@st.composite
def paging_case(draw):
    mode = draw(st.sampled_from(["32", "pae", "4level", "5level"]))
    level = draw(st.integers(1, MODE_LEVELS[mode]))
    raw = draw(u64)
    if draw(st.integers(0, 4)):
        raw |= 1                       # mostly present
    if draw(st.booleans()):
        raw = (raw & ~0x80) | (draw(st.integers(0, 1)) << 7)
    if mode == "32":
        raw &= 0xFFFFFFFF
    maxphyaddr = draw(st.integers(32, 52))
    # Valid PAT MSRs (one of the eight encodings 0-7 per byte, incl. the reserved
    # 2 and 3), the default (None), or a fully random 64-bit value.
    pat = draw(st.one_of(st.none(),
                         st.lists(st.integers(0, 7), min_size=8, max_size=8).map(
                             lambda b: sum(v << (8 * i) for i, v in enumerate(b))),
                         st.integers(0, U64)))
    return raw, mode, level, maxphyaddr, pat, draw(st.booleans()), draw(st.booleans())


@settings(MEDIUM, max_examples=1200)
@given(paging_case())
@example((0xC0556083, "32", 2, 36, None, True, True))              # PSE-36, M = 36
@example((0xC0556083, "32", 2, 52, None, False, True))             # PS ignored, CR4.PSE=0
@example((0x00600083, "32", 2, 40, None, True, True))              # bit 21 reserved
@example((0x8000000012345003, "pae", 3, 52, None, True, True))     # PDPTE reserved + bit 63
@example((0x80000000002001E3, "4level", 2, 52, 0x0407050600070106, True, True))  # Linux 2 MiB
@example((0x80000000400001E3, "5level", 3, 46, None, True, False))  # 1 GiB, XD w/o NXE
@example((0x5000000000001001, "4level", 1, 52, None, True, True))   # pkey 10
@example((0x0000010000000001, "4level", 1, 40, None, True, True))   # bit 40 >= MAXPHYADDR
@example((0x1083, "5level", 5, 52, None, True, True))              # PS reserved in PML5E
@example((0x1019, "4level", 1, 52, 0x0000000003000000, True, True))  # reserved(3)
@example((0xFFFFFFFFFFFFFFFE, "4level", 4, 32, None, True, False))  # not present
def test_paging_entry(case):
    raw, mode, level, maxphyaddr, pat, pse, nxe = case
    got = PagingEntry.decode(raw, mode=mode, level=level, maxphyaddr=maxphyaddr, pat=pat,
                             pse=pse, nxe=nxe).to_dict()
    compare(got, ref_paging(raw, mode, level, maxphyaddr, pat, pse, nxe))


@FAST
@given(st.sampled_from(["32", "pae", "4level", "5level"]), st.data())
def test_paging_batch(mode, data):
    level = data.draw(st.integers(1, MODE_LEVELS[mode]))
    width = 4 if mode == "32" else 8
    raws = data.draw(st.lists(u64.map(lambda v: v & ((1 << (8 * width)) - 1)), max_size=16))
    if mode == "pae":
        raws = [r & ~mask(62, 52) for r in raws]
    kw = dict(maxphyaddr=data.draw(st.integers(32, 52)),
              pat=data.draw(st.one_of(st.none(), st.integers(0, U64))),
              pse=data.draw(st.booleans()), nxe=data.draw(st.booleans()))
    base = data.draw(st.one_of(st.none(), st.integers(0, 1 << 40).map(lambda v: v << 12)))
    blob = b"".join(r.to_bytes(width, "little") for r in raws)
    batch = decode_paging_entries(blob, mode=mode, level=level, base_address=base, **kw)
    assert len(batch) == len(raws)
    for i, (entry, raw) in enumerate(zip(list(batch), raws)):
        got = entry.to_dict()
        got.pop("address", None)
        assert got == PagingEntry.decode(raw, mode=mode, level=level, **kw).to_dict()
        assert got == ref_paging(raw, mode, level, kw["maxphyaddr"], kw["pat"], kw["pse"], kw["nxe"])
        assert entry.address == (None if base is None else base + width * i)


# ---------------------------------------------------------- debug registers ---

@MEDIUM
@given(u64, st.booleans(), st.booleans())
@example(0x400, True, False)
@example(0, True, False)
@example(0x400, False, False)
@example(0xFFFFFFFF, False, False)
@example(0xFFFFFFFF, True, True)
@example(0x82000408, False, False)      # undefined encodings only in disabled slots
@example(0x0B000410, False, False)      # LEN=10 outside 64-bit mode
def test_dr7(raw, long_mode, cr4_de):
    if not long_mode and raw >> 32 and raw & 1:
        raw &= 0xFFFFFFFF               # mostly 32-bit values outside 64-bit mode
    assert DR7.decode(raw, long_mode=long_mode, cr4_de=cr4_de).to_dict() == \
        ref_dr7(raw, long_mode, cr4_de)


@MEDIUM
@given(u64)
@example(0xFFFF0FF0)
@example(0)
@example(0xFFFE07F0)
@example(0xFFFFFFFF)
@example(U64)
def test_dr6(raw):
    assert DR6.decode(raw).to_dict() == ref_dr6(raw)


breakpoint_request = st.tuples(
    st.integers(0, 5),                           # slot (4 and 5 are refused)
    st.integers(0, 3),                           # condition
    st.sampled_from([1, 2, 4, 8, 1, 2, 4, 3]),   # length (3 is refused)
    st.sampled_from(["local", "global", "both"]),
    st.one_of(st.none(), st.integers(0, U64), st.integers(0, 1 << 44).map(lambda v: v << 3)),
)

RULE_WORDS = {   # a word each refusal's message must contain
    "slot": "slot", "duplicate": "twice", "length": "length", "exec-length": "execute",
    "len8": "64-bit", "io": "DE", "alignment": "align",
}


@settings(MEDIUM, max_examples=600)
@given(st.lists(breakpoint_request, max_size=5), st.booleans(), st.booleans(), st.booleans(),
       st.booleans(), st.booleans())
@example([(0, 1, 4, "local", 0x7FFC1000)], True, False, False, False, False)
@example([(0, 0, 2, "local", None)], True, False, False, False, False)
@example([(0, 1, 8, "both", 0x1000)], False, False, False, False, False)
@example([(0, 2, 1, "global", 0x3F8)], True, False, False, False, False)
@example([(1, 1, 1, "local", None), (1, 3, 1, "local", None)], True, True, True, True, True)
def test_encode_dr7(requests, long_mode, cr4_de, le, ge, gd):
    try:
        expected, rule = ref_encode_dr7(requests, long_mode, cr4_de, le, ge, gd), None
    except RefEncodeError as err:
        expected, rule = None, err
    bps = [Breakpoint(slot, Condition(cond), length, scope, address)
           for slot, cond, length, scope, address in requests]
    try:
        got = encode_dr7(bps, long_mode=long_mode, cr4_de=cr4_de, le=le, ge=ge, gd=gd)
    except EncodeError as err:
        assert rule is not None, "refused a valid request: %s" % err
        assert err.index == rule.index
        assert RULE_WORDS[rule.rule].lower() in str(err).lower(), (rule.rule, str(err))
        return
    assert rule is None, "accepted a request that breaks %s (index %d)" % (rule.rule, rule.index)
    assert got.raw == expected
    # Round trip: decoding gives back the requests and nothing else.
    decoded = DR7.decode(got.raw, long_mode=long_mode, cr4_de=cr4_de).to_dict()
    assert decoded == got.to_dict()
    assert decoded["anomalies"] == [] and decoded["reserved_bits"] == 0
    assert (decoded["le"], decoded["ge"], decoded["gd"]) == (le, ge, gd)
    asked = {slot: (cond, length, scope) for slot, cond, length, scope, _ in requests}
    for b in decoded["breakpoints"]:
        if b["index"] in asked:
            cond, length, scope = asked[b["index"]]
            assert b["condition"] == ["execute", "write", "io", "readwrite"][cond]
            assert b["length"] == length
            assert b["local"] == (scope in ("local", "both"))
            assert b["global"] == (scope in ("global", "both"))
        else:
            assert not b["enabled"]
