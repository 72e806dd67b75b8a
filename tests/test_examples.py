"""The shipped example session runs end to end and writes what it says."""

import os
import shutil
import subprocess

import pytest
from helpers import ROOT


@pytest.mark.skipif(shutil.which("eplb") is None or shutil.which("bash") is None, reason="needs the eplb command and bash")
def test_session_script(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path))
    proc = subprocess.run(["bash", "examples/session.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ("plan.safetensors", "plan2.safetensors", "plan2.json", "init_expert_location.json", "moe_load_balancer.yaml"):
        assert (tmp_path / name).stat().st_size > 0
    assert "moved" in proc.stdout and "reloaded (58, 288) phy2log" in proc.stdout
