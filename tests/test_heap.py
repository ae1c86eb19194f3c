"""trainer.retain_heap: freed activations stay in the heap, so reusing them takes no page faults."""

import platform
import subprocess
import sys

import pytest

from vidgan_cli.train import heap
from vidgan_cli.train.trainer import Trainer

# Free a 16 MiB tensor and report how many MiB of free memory the heap kept for reuse.
PROBE = """
import ctypes, sys, torch
from vidgan_cli.train.heap import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                     "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
mallinfo2.restype = MallInfo2
x = torch.ones(4 << 20)
del x
print(mallinfo2().fordblks >> 20)
"""

def has_glibc(version=(2, 33)) -> bool:  # mallinfo2 came with 2.33
    name, found = platform.libc_ver()
    return name == "glibc" and tuple(int(x) for x in found.split(".")[:2]) >= version


glibc = pytest.mark.skipif(not has_glibc(), reason="mallopt thresholds and mallinfo2 are glibc's (>= 2.33)")


def kept_mib(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


@glibc
def test_freed_activations_stay_in_the_heap():
    # glibc's defaults map a block that large on its own and unmap it when freed: the next one
    # faults in fresh pages. Retained, it stays in the heap for the next allocation.
    assert kept_mib("default") < 16
    assert kept_mib("retain") >= 16


@glibc
def test_retain_freed_memory_reports_success():
    assert heap.retain_freed_memory() is True


@pytest.mark.parametrize("retain", [True, False])
def test_trainer_retains_the_heap_on_cpu_when_asked(compose_train, tmp_path, monkeypatch, retain):
    calls = []
    monkeypatch.setattr(heap, "retain_freed_memory", lambda: calls.append(1) or True)
    Trainer(compose_train(f"trainer.retain_heap={retain}"), tmp_path)
    assert calls == ([1] if retain else [])
