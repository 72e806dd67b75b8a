"""Compiled kernels: the same results as their pure-Python originals, the packer codes, and lazy loading.

The kernels run compiled in this process and as plain Python in a subprocess
with ``NUMBA_DISABLE_JIT=1`` (the reference logic, line for line) on the same
random cases; every output must match exactly, floats bit for bit. Run as a
script (``python tests/test_kernels.py OUT.npz``) this file writes those
outputs, which is what the subprocess does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the subprocess runs this file as a script
    sys.path.insert(0, str(ROOT))

from eplb_cli.strategies import kernels  # noqa: E402

PACKER_CODES = {"lpt": 0, "rounds": 1, "snake": 2, "kk": 3, "restarts": 4, "diverse": 5}


def _weights(rng: np.random.Generator, rows: int, m: int, kind: str) -> np.ndarray:
    if kind == "ties":
        return rng.integers(0, 4, (rows, m)).astype(np.float64)
    w = np.exp(rng.normal(0.0, 1.5, (rows, m)))
    if kind == "zeros":
        w[0] = 0.0
        w[:, ::3] = 0.0
    return w


def outputs() -> dict[str, np.ndarray]:
    """Every batched entry point on random cases (small: the reference runs as plain Python)."""
    rng = np.random.default_rng(2024)
    out: dict[str, np.ndarray] = {}
    for case in range(10):
        kind = ("lognormal", "ties", "zeros")[case % 3]
        bins = int(rng.integers(1, 7))
        cap = int(rng.integers(1, 8))
        rows, m = 3, bins * cap
        n = int(rng.integers(max(1, m // 3), m + 1))
        w = _weights(rng, rows, n, kind)
        counts = kernels.dhondt_rows(w, m)
        out[f"{case}/dhondt"] = counts
        out[f"{case}/thinned"] = kernels.thinned_rows(w, counts, 4)
        phy = kernels.arrange(w, counts, m, bins, np.array([3], np.int64), np.empty((rows, 0, m)), 0, 0, False,
                              np.full(rows, -np.inf), False, 8, 0)[0]
        log2phy, logcnt = kernels.log2phy_rows(phy, n, m - n + 1)
        out[f"{case}/log2phy"] = np.concatenate([log2phy.reshape(rows, -1), logcnt], 1)
        items = _weights(rng, rows, m, kind)
        mult = np.exp(rng.normal(0.0, 0.05, (rows, 4, m)))
        mult[:, 0] = 1.0
        for name, code in PACKER_CODES.items():
            if name != "diverse":
                for base in (0, 1, 3):
                    out[f"{case}/pack/{name}/{base}"] = kernels.pack_rows(code, items, bins, False, mult, base)
        none = np.empty((rows, 0, m), np.float64)
        start = kernels.pack_rows(3, items, bins, False, none, 3)
        experts = rng.integers(0, max(1, m // 2), (rows, m))
        floor = np.where(rng.random(rows) < 0.3, items.sum(1) / bins, -np.inf)
        for resplit in (False, True):
            out[f"{case}/refine/{resplit}"] = kernels.refine_rows(
                items, start, bins, 50, np.zeros((0, 0), np.int64), floor, resplit and 3 <= cap <= 6, 8, case % 3)
        out[f"{case}/refine/dense"] = kernels.refine_rows(items, start, bins, 50, experts, floor, False, 8, case % 2)
        out[f"{case}/dedupe"] = kernels.dedupe_rows(items, start, bins, experts, m)
        if m > n:
            expert = np.repeat(np.arange(n)[None, :], rows, 0)
            expert = np.concatenate([expert, rng.integers(0, n, (rows, m - n))], 1)
            have = np.stack([np.bincount(row, minlength=n) for row in expert])
            bin_of = np.stack([rng.permutation(m) // cap for _ in range(rows)])
            for spread in (False, True):
                c, e = have.copy(), expert.copy()
                moved = kernels.fixup_rows(w, c, e, bin_of, bins, spread)
                out[f"{case}/fixup/{spread}"] = np.concatenate([c, e, moved[:, None]], 1)
        chains = ([3, 0], [1], [2, 3], [4], [5], [0])
        for k, packers in enumerate(chains):
            spread = packers == [5]
            mult_k = mult if 4 in packers else none
            resplit = not spread and 3 <= cap <= 6
            phy, top, settled = kernels.arrange(w, counts, m, bins, np.array(packers, np.int64), mult_k,
                                                (0, 8, 50)[k % 3], k % 2, spread, floor, resplit, 8, k % 3)
            out[f"{case}/arrange/{k}"] = np.concatenate([phy, top.view(np.int64)[:, None], settled[:, None]], 1)
    return out


def test_compiled_kernels_match_their_python_originals(tmp_path: Path) -> None:
    path = tmp_path / "reference.npz"
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    proc = subprocess.run([sys.executable, __file__, str(path)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reference = np.load(path)
    compiled = outputs()
    assert sorted(reference.files) == sorted(compiled)
    for key, value in compiled.items():
        assert value.dtype == reference[key].dtype, key
        assert np.array_equal(value, reference[key]), key


def test_the_kernels_are_compiled_here() -> None:
    """The comparison above means something only if this process runs machine code."""
    kernels.dhondt_rows(np.ones((1, 3)), 5)
    assert kernels.dhondt_rows.signatures and hasattr(kernels.dhondt_rows, "py_func")


@pytest.mark.parametrize("m", [5, 33, 64, 65, 300, 1500])
@pytest.mark.parametrize("descending", [False, True])
def test_argsort_is_a_stable_sort(m: int, descending: bool) -> None:
    """Insertion, two- and three-digit radix paths: exact order, ties (0.0 and -0.0 too) in index order."""
    rng = np.random.default_rng(m)
    rows = [
        rng.normal(0.0, 1e3, m),
        rng.integers(0, 4, m).astype(np.float64),  # many exact ties
        np.where(np.arange(m) < m // 2, 0.0, -0.0),
        np.where(np.arange(m) % 2 == 0, np.inf, rng.normal(0.0, 1.0, m)),
        np.exp(rng.normal(0.0, 30.0, m)),  # huge and tiny values
        1.0 + rng.integers(0, 3, m) * np.finfo(np.float64).eps,  # neighbours in the last bit
        np.sort(rng.normal(0.0, 1.0, m)),  # already in order
    ]
    order = np.empty(m, np.int64)
    for x in rows:
        kernels.argsort(x, order, descending)
        want = np.argsort(-x if descending else x, kind="stable")
        if descending:  # -x turns 0.0 into -0.0 and back; ties must still keep index order
            want = np.lexsort((np.arange(m), -x))
        assert np.array_equal(order, want)


def test_log2phy_rows_inverts_phy2log_like_the_placement() -> None:
    """The compiled inverse that rebalance_experts returns equals Placement's log2phy and logcnt, padded."""
    import torch

    from eplb_cli.placement import replica_counts, slots_of_experts

    rng = np.random.default_rng(5)
    for experts, slots in ((1, 1), (4, 9), (16, 40), (256, 288)):
        phy = np.stack([rng.permutation(np.concatenate([np.arange(experts), rng.integers(0, experts, slots - experts)]))
                        for _ in range(3)])
        phy[0, :1] = -1  # an empty slot (an excluded GPU's)
        width = slots - experts + 1
        log2phy, logcnt = kernels.log2phy_rows(phy, experts, width)
        compact = slots_of_experts(torch.from_numpy(phy), experts)
        assert np.array_equal(log2phy[:, :, : compact.shape[2]], compact.numpy())
        assert (log2phy[:, :, compact.shape[2]:] == -1).all()
        assert np.array_equal(logcnt, replica_counts(torch.from_numpy(phy), experts).numpy())


def test_packer_codes_match_the_packer_names() -> None:
    from eplb_cli.strategies.pack import PACKERS

    assert {name: PACKERS.index(name) for name in PACKERS} == PACKER_CODES
    assert [kernels.LPT, kernels.ROUNDS, kernels.SNAKE, kernels.KK, kernels.RESTARTS, kernels.DIVERSE] == list(range(6))


def test_numba_loads_only_when_a_plan_runs() -> None:
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "import eplb_cli\n"
        "from eplb_cli.cli import app\n"
        "assert CliRunner().invoke(app, ['--help']).exit_code == 0\n"
        "assert 'numba' not in sys.modules, 'numba imported by import eplb_cli or eplb --help'\n"
        "import torch\n"
        "eplb_cli.rebalance_experts(torch.rand(2, 8), 12, 1, 1, 4)\n"
        "assert 'numba' in sys.modules\n"
    )
    from helpers import run_fresh  # here: this file also runs as a script, where helpers is not wanted

    run_fresh(script)


if __name__ == "__main__":
    np.savez(sys.argv[1], **outputs())
