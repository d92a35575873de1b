"""A stand-in for a training script, for the browser tests: it runs for ten minutes.

Twice a second it prints a line, does some CPU work and keeps 4 MiB more memory (up to
200 MiB), so that the live view has a log to follow and charts that move.
"""

import math
import time

held = []
for step in range(1, 1201):
    if len(held) < 50:
        held.append(b"x" * (4 * 1024 * 1024))  # touched pages: the memory chart climbs
    sum(range(2_000_000))
    loss = 2.5 * math.exp(-step / 40) + 0.1
    print(f"step {step:3d}  loss {loss:.3f}  holding {4 * len(held)} MiB", flush=True)
    time.sleep(0.5)
