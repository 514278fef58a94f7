"""What the peer benchmarks share (bench/vs_peers.py, bench/vs_volatility.py):
Volatility 3 over ksinspect's physical memory, the random mapped addresses
they race on, and the clock.

Volatility 3 is optional: without it ``volatility_layer`` is None.
"""
import argparse
import random
import time

from ksinspect.errors import InvalidAddressError
from ksinspect.memory import open_image

try:
    from volatility3.framework import contexts, exceptions as vol_exceptions, interfaces
    from volatility3.framework.layers import intel
except ImportError:  # pragma: no cover - depends on the machine
    contexts = vol_exceptions = interfaces = intel = None

# CPU time of this thread: the build machine is shared, and wall time there
# measures the neighbours. A peer's own background threads (MemProcFS runs
# some) are not counted, which can only favour the peer.
clock = time.thread_time


def timed(fn):
    """CPU seconds of one call of fn."""
    start = clock()
    fn()
    return clock() - start


def image_parser(description):
    """An argument parser with the image and how to walk it (--cr3, --mode, --registers)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("image")
    parser.add_argument("--cr3", type=lambda s: int(s, 16))
    parser.add_argument("--mode", choices=("32", "pae", "4level", "5level"))
    parser.add_argument("--registers")
    return parser


def open_memory(args):
    """The image that image_parser's arguments name."""
    return open_image(args.image, registers=args.registers)


def draw_addresses(maps, count, seed):
    """count random linear addresses inside the mappings, each mapping drawn
    with a weight of its size (so addresses are uniform over mapped memory)."""
    rng = random.Random(seed)
    cumulative, total = [], 0
    for m in maps:
        total += m.size
        cumulative.append(total)
    return [m.start + rng.randrange(m.size)
            for m in rng.choices(maps, cum_weights=cumulative, k=count)]


if interfaces is not None:
    # --- Volatility over ksinspect's physical memory ---------------------------------------

    class KsinspectPhysicalLayer(interfaces.layers.DataLayerInterface):
        """A Volatility data layer reading a ksinspect PhysicalMemory (same bytes, same runs)."""

        def __init__(self, context, config_path, name, memory, metadata=None):
            super().__init__(context, config_path, name, metadata)
            self._memory = memory
            self._maximum = max((r.start + r.length for r in memory.runs), default=1) - 1

        @property
        def maximum_address(self):
            return self._maximum

        @property
        def minimum_address(self):
            return 0

        def is_valid(self, offset, length=1):
            return self._memory.contains(offset, length)

        def read(self, offset, length, pad=False):
            try:
                return self._memory.read(offset, length)
            except InvalidAddressError:
                if pad:
                    return b"\0" * length
                raise vol_exceptions.InvalidAddressException(
                    self.name, offset, "not in the image") from None

        def write(self, offset, data):
            raise NotImplementedError("read-only")

        @property
        def dependencies(self):
            return []

        @classmethod
        def get_requirements(cls):
            return []


    class Intel32eLA57(intel.Intel32e):
        """Volatility's Intel32e with a fifth level (it ships none for LA57)."""

        _maxvirtaddr = 57
        _structure = [("page map layer 5", 9, False)] + intel.Intel32e._structure


    VOLATILITY_LAYERS = {"32": intel.Intel, "pae": intel.IntelPAE, "4level": intel.Intel32e,
                         "5level": Intel32eLA57}


    def volatility_layer(memory, space):
        context = contexts.Context()
        context.layers.add_layer(KsinspectPhysicalLayer(context, "phys", "phys", memory))
        context.config["virt.memory_layer"] = "phys"
        context.config["virt.page_map_offset"] = space.root
        layer = VOLATILITY_LAYERS[space.mode.value](context, "virt", "virt")
        context.layers.add_layer(layer)
        return layer


else:  # pragma: no cover - depends on the machine
    KsinspectPhysicalLayer = Intel32eLA57 = volatility_layer = None
    VOLATILITY_LAYERS = {}
