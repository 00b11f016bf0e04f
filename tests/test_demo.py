"""Run `make demo`'s script end to end, as CI's proof that the main job works."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.sshd
@pytest.mark.skipif(os.geteuid() != 0, reason="the demo installs root-owned host files and runs sshd as root")
def test_demo_runs_every_step():
    before = set(Path("/run").glob("sshca-demo-*"))

    completed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=600,
    )

    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "Demo finished: every step behaved as stated." in completed.stdout
    for expected in (
        "logged in:",
        "refused: ",
        "you cannot approve",
        "installed the new KRL",
        "Audit chain intact",
    ):
        assert expected in output, f"{expected!r} missing from the demo output:\n{output}"
    assert set(Path("/run").glob("sshca-demo-*")) == before, "the demo left its folder behind"
