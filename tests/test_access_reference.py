"""ksinspect.access against tests/reference_access.py, written from the SDM's
lists (§4.6.1, §4.6.2, §4.7 for paging; §3.4.5.1, §5.3, §5.4.1 for segments),
over random rights, control bits, accesses, descriptors and offsets."""
from hypothesis import given, settings, strategies as st

from ksinspect.access import Fault, PageRights, PagingState, check_page_access, \
    check_segment_access
from ksinspect.x86.control import CpuMode
from ksinspect.x86.descriptor import SegmentDescriptor

from reference_access import ref_error_code, ref_page_allowed, ref_segment_access

SETTINGS = settings(max_examples=300, deadline=None, database=None)
ACCESS = st.sampled_from(["read", "write", "execute"])


@SETTINGS
@given(present=st.booleans(), reserved=st.booleans(), writable=st.booleans(),
       user_page=st.booleans(), nx=st.booleans(), access=ACCESS, user_mode=st.booleans(),
       implicit=st.booleans(), wp=st.booleans(), smep=st.booleans(), smap=st.booleans(),
       ac=st.booleans(), nxe=st.booleans(), pae=st.booleans(), pke=st.booleans(),
       ia32e=st.booleans(), pkey=st.one_of(st.none(), st.integers(0, 15)),
       pkru=st.one_of(st.none(), st.integers(0, 2 ** 32 - 1)))
def test_paging_rights_match_the_manuals_lists(present, reserved, writable, user_page, nx,
                                               access, user_mode, implicit, wp, smep, smap, ac,
                                               nxe, pae, pke, ia32e, pkey, pkru):
    ia32e = ia32e and pae
    rights = PageRights(present and not reserved, writable, user_page, nx, pkey, reserved)
    state = PagingState(wp, smep, smap, pke, nxe, ac, pkru, ia32e, pae)
    r = check_page_access(rights, 0x1000, access, user_mode, state, implicit=implicit)
    mode = "user" if user_mode and not implicit else "supervisor"
    if reserved:
        expected_ok, pk, p = False, False, True
    elif not present:
        expected_ok, pk, p = False, False, False
    else:
        (expected_ok, pk), p = ref_page_allowed(user_page, writable, nx, access, mode, wp, smep,
                                                smap, ac, implicit, nxe, pae, pke, ia32e, pkey,
                                                pkru), True
    assert r.ok == expected_ok
    if not expected_ok:
        assert r.fault is Fault.PF and r.cr2 == 0x1000
        assert r.error_code.raw == ref_error_code(p, access, mode, pk, reserved, nxe, pae, smep)


@st.composite
def descriptor(draw):
    type_ = draw(st.integers(0, 15))
    raw_limit = draw(st.sampled_from([0, 1, 0xFF, 0xFFF, 0xFFFF, 0xFFFFF])
                     | st.integers(0, 0xFFFFF))
    g, b = draw(st.booleans()), draw(st.booleans())
    lo = raw_limit & 0xFFFF
    hi = type_ << 8 | 1 << 12 | 3 << 13 | 1 << 15 | (raw_limit >> 16) << 16 | b << 22 | g << 23
    return type_, raw_limit, g, b, SegmentDescriptor.decode(hi << 32 | lo, None, "legacy")


@SETTINGS
@given(descriptor(), st.one_of(st.integers(0, 0xFFFFFFFF),
                               st.sampled_from([0, 0xFFF, 0x1000, 0xFFFF, 0x10000, 0xFFFFF,
                                                0xFFFFFFFF])),
       st.integers(1, 64), ACCESS)
def test_segment_type_and_limit_match_the_manual(d, offset, size, access):
    type_, raw_limit, g, b, desc = d
    register = "cs" if access == "execute" else "ds"
    r = check_segment_access(desc, offset, access, size, 3, CpuMode.PROTECTED, register,
                             loaded=True)
    ok, reason = ref_segment_access(type_, raw_limit, g, b, offset, size, access)
    assert r.ok == ok, (reason, [str(s) for s in r.steps])
    if ok:
        assert r.linear == offset
    else:
        assert (r.fault, r.error_code) == (Fault.GP, 0)
