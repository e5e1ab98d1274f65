"""Long runs stay flat: 200 calls with varying inputs neither grow memory nor recompile."""

import gc
from pathlib import Path

import numpy as np
import pytest

import sdlib

pytestmark = pytest.mark.slow


def resident_mib():
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("needs /proc (Linux) to read resident memory")
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no VmRSS in /proc/self/status")


def test_200_calls_keep_memory_and_trace_count_flat():
    pipe = sdlib.StableDiffusion.from_preset("tiny", img_height=64, img_width=64)
    rng = np.random.default_rng(0)
    words = ["red", "circle", "square", "blue", "in the", "top", "left", "on", "a", "background"]
    memory, traces = {}, {}
    for call in range(1, 201):
        prompt = " ".join(rng.choice(words, size=rng.integers(0, 12)))
        pipe.text_to_image(prompt, batch_size=2, num_steps=int(rng.integers(1, 5)),
                           guidance_scale=float(rng.choice([1.0, 3.0, 7.5, 12.0])),
                           seed=int(rng.integers(0, 2**31)), verbose=False)
        if call in (20, 200):
            gc.collect()
            memory[call] = resident_mib()
            traces[call] = dict(pipe.trace_counts)
    print(f"resident memory after call 20: {memory[20]:.0f} MiB, "
          f"after call 200: {memory[200]:.0f} MiB")
    assert memory[200] <= 1.10 * memory[20]
    assert traces[200] == traces[20]
