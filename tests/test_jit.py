"""jit.py: modules with compiled loops import without Numba; the first call compiles the whole module."""

from __future__ import annotations

from helpers import run_fresh


def test_compiled_modules_import_without_numba_and_compile_on_first_call() -> None:
    script = (
        "import sys\n"
        "import torch\n"
        "import eplb_cli.api\n"
        "from eplb_cli.planning import assignment, migration, robust\n"
        "from eplb_cli import metrics\n"
        "assert 'numba' not in sys.modules, 'a module with compiled loops imported numba'\n"
        "w = torch.tensor([[[1.0, 5.0], [4.0, 2.0]]])\n"
        "assert assignment.max_weight_assignment(w).tolist() == [[1, 0]]\n"
        "from numba.core.registry import CPUDispatcher\n"
        "for name in ('_solve_all', '_solve', '_reduce_rows', '_augment'):\n"
        "    assert isinstance(getattr(assignment, name), CPUDispatcher), name\n"
        "assert not isinstance(metrics._split_dp, CPUDispatcher), 'another module compiled too early'\n"
    )
    run_fresh(script)
