"""Random images, CR3 values and modes fed to the page walker (issue 8).

Hypothesis draws a physical-memory image (a few pages of random entries,
biased towards present entries that point back into the image, so walks go
deep, loop and alias), a run layout (one run from 0, or pages scattered at
random physical addresses, or a read callback with holes), a CR3 (0, a page
of the image, past the image, any 64-bit value), a paging mode, MAXPHYADDR
and the NXE / PSE / WP / ignore-reserved switches. Every walker entry point
must then terminate with a valid result or the library's own error:

* ``AddressSpace`` accepts the CR3 or raises InvalidAddressError naming it;
* ``translate`` / ``translate_many``: a mapped address keeps its offset in a
  page size the mode has; each entry on the path is the 4 or 8 bytes at its
  address (read back through the image); the batch equals single walks;
* ``mappings``: sorted, disjoint ranges whose first byte translates to what
  they say, or WalkLimitError at the cap;
* ``physical_to_virtual``: every alias translates back into the page;
* ``read``: the bytes are the physical bytes the walk names, or
  InvalidAddressError.

Deadline: a case that runs past 20 s counts as a hang.
"""
import random

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hang_guard import deadline
from ksinspect.errors import DecodeError, InvalidAddressError, KsinspectError, WalkLimitError
from ksinspect.memory import PhysicalMemory, Run
from ksinspect.paging import AddressSpace

PAGE = 4096
MODES = ("32", "pae", "4level", "5level")
PAGE_SIZES = {"32": {4096, 4 << 20}, "pae": {4096, 2 << 20},
              "4level": {4096, 2 << 20, 1 << 30}, "5level": {4096, 2 << 20, 1 << 30}}


class CallbackMemory:
    """Physical memory behind ``read(pa, n)`` only (the C walker calls back):
    the pages at their addresses, everything else missing."""

    def __init__(self, pages):
        self.pages = pages

    def read(self, pa, n):
        out = bytearray()
        while len(out) < n:
            page = self.pages.get((pa + len(out)) & ~(PAGE - 1))
            if page is None:
                raise InvalidAddressError("not here", address=pa + len(out))
            at = (pa + len(out)) % PAGE
            out += page[at:at + n - len(out)]
        return bytes(out)


@st.composite
def random_space(draw):
    mode = draw(st.sampled_from(MODES))
    rng = random.Random(draw(st.integers(0, 2 ** 32 - 1)))
    count = draw(st.integers(1, 5))
    layout = draw(st.sampled_from(["flat", "scattered", "callback"]))
    if layout == "flat":
        addresses = [i * PAGE for i in range(count)]
    else:
        addresses = sorted(set(rng.randrange(0, 1 << 20) * PAGE for _ in range(count)))
    width = 4 if mode == "32" else 8
    pages = {}
    for pa in addresses:
        page = bytearray(PAGE)
        for i in range(0, PAGE, width):
            kind = rng.random()
            if kind < 0.6:
                continue
            if kind < 0.93:      # present, naming a page of the image (or a neighbour)
                target = rng.choice(addresses) + rng.choice((0, 0, 0, PAGE, -PAGE))
                value = max(target, 0) | rng.getrandbits(9) | 1
            else:
                value = rng.getrandbits(8 * width)
            page[i:i + width] = value.to_bytes(width, "little")
        pages[pa] = bytes(page)
    in_image = st.sampled_from(addresses)
    cr3 = draw(st.one_of(in_image, in_image, in_image, in_image, st.just(0),
                         st.integers(0, 1 << 52).map(lambda v: v & ~0xFFF),
                         st.integers(0, (1 << 64) - 1)))
    options = dict(maxphyaddr=draw(st.sampled_from([32, 36, 40, 46, 52])),
                   nxe=draw(st.booleans()), pse=draw(st.booleans()), wp=draw(st.booleans()),
                   ignore_reserved=draw(st.booleans()))
    return mode, layout, pages, cr3, options, rng


def memory_of(layout, pages):
    if layout == "callback":
        return CallbackMemory(pages)
    buffer, runs = b"", []
    for pa in sorted(pages):
        runs.append(Run(pa, PAGE, len(buffer)))
        buffer += pages[pa]
    if layout == "flat":
        runs = [Run(0, len(buffer), 0)]
    return PhysicalMemory(buffer, runs, "raw")


def physical(memory, layout, pa, n):
    """n bytes at pa, read without the C core (None when missing)."""
    if layout == "callback":
        try:
            return memory.read(pa, n)
        except InvalidAddressError:
            return None
    return memory.read(pa, n) if memory.contains(pa, n) else None


def addresses_for(space, rng):
    bits = space.va_bits
    vas = [rng.getrandbits(bits) for _ in range(24)] + [0, (1 << bits) - 1]
    if bits > 32:
        vas = [va | ((1 << 64) - (1 << bits)) if va >> (bits - 1) else va for va in vas]
    vas += [va ^ (PAGE << rng.randrange(0, 36, 9)) for va in vas[:8]]   # shared prefixes
    return [va & ((1 << 64) - 1) for va in vas]


def check_translation(space, memory, layout, t):
    width = 4 if space.mode.value == "32" else 8
    assert len(t.path) <= space.levels
    for step in t.path:
        raw = physical(memory, layout, step.address, width)
        assert raw is not None and int.from_bytes(raw, "little") == step.value
    if t.mapped:
        assert t.page_size in PAGE_SIZES[space.mode.value]
        assert (t.pa - t.va) % t.page_size == 0
        assert t.pa == t.leaf.frame + (t.va & (t.page_size - 1))
    else:
        assert t.error and t.pa is None


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(random_space())
def test_random_images_and_cr3_end_in_a_valid_result_or_the_library_error(case):
    mode, layout, pages, cr3, options, rng = case
    memory = memory_of(layout, pages)
    with deadline():
        try:
            space = AddressSpace(memory, cr3=cr3, mode=mode, **options)
        except (InvalidAddressError, DecodeError) as exc:
            assert "\n" not in str(exc)
            if isinstance(exc, InvalidAddressError):
                assert "CR3 %#x" % cr3 in str(exc)
            event("CR3 refused")
            return
        vas = addresses_for(space, rng)
        batch = space.translate_many(vas)
        for i, va in enumerate(vas):
            t = batch[i]
            try:
                single = space.translate(va)
            except InvalidAddressError:
                assert t.reason in ("not canonical", "above 4 GiB")
                continue
            assert single == t
            check_translation(space, memory, layout, t)

        try:
            previous_end = None
            for count, m in enumerate(space.mappings(max_entries=30_000, chunk=7)):
                assert m.size > 0 and m.page_size in PAGE_SIZES[mode]
                assert previous_end is None or m.start >= previous_end
                previous_end = m.end
                first = space.translate(m.start)
                assert first.pa == m.pa and first.page_size == m.page_size
                if count > 40:
                    break
        except WalkLimitError as exc:
            assert exc.entries_read >= 30_000

        mapped = [t for t in (batch[i] for i in range(len(vas))) if t.mapped]
        event("some addresses mapped" if mapped else "nothing mapped")
        target = mapped[0].pa if mapped else rng.getrandbits(32)
        try:
            aliases = space.physical_to_virtual(target, max_entries=30_000, max_aliases=500)
        except WalkLimitError:
            aliases = []
        for alias in aliases[:20]:
            assert space.translate(alias.va).pa == target
        if mapped:
            t = mapped[0]
            page = t.va - (t.va & (t.page_size - 1))
            if aliases and len(aliases) < 500:
                assert any(a.page_start == page for a in aliases)

        for t in mapped[:5]:
            n = rng.choice((1, 16, PAGE + 8))
            if t.va + n > space.top:
                continue
            try:
                data = space.read(t.va, n)
            except InvalidAddressError as exc:
                assert exc.address >= t.va
                continue
            assert data[:1] == physical(memory, layout, t.pa, 1)


def test_library_errors_are_specific():
    # The errors this test accepts are the library's own, not builtins.
    for error in (InvalidAddressError, DecodeError, WalkLimitError):
        assert issubclass(error, KsinspectError)
    with pytest.raises(InvalidAddressError):
        AddressSpace(PhysicalMemory.from_bytes(bytes(PAGE)), cr3=0x10000, mode="4level")
