"""Regenerate the example traces shipped in ``traces/`` from the synthetic generator.

Run ``python examples/make_traces.py [--force]``; it works from a checkout
without installing the package. The same torch version gives byte-identical files.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from eplb_cli.formats import write_trace  # noqa: E402
from eplb_cli.synthetic import generate  # noqa: E402  (needs ROOT on sys.path in a bare checkout)

TRACES = ROOT / "traces"

SPECS = {
    "deepseek-v3-synthetic.safetensors": dict(layers=58, experts=256, windows=24, groups=8, seed=0),
    "small.safetensors": dict(layers=4, experts=16, windows=6, groups=4, seed=1),
}
"""File name -> generator arguments: DeepSeek-V3's MoE shape, and a tiny one for quick runs."""


def main(force: bool = False) -> None:
    """Write every trace in ``SPECS`` into ``traces/``."""
    for name, spec in SPECS.items():
        trace = generate(**spec)
        write_trace(trace, str(TRACES / name), "safetensors", force=force)
        print(f"{TRACES / name}: {trace.windows} windows x {trace.layers} layers x {trace.experts} experts")


if __name__ == "__main__":
    main(force="--force" in sys.argv[1:])
