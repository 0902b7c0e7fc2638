"""The README's plain-numpy example (examples/logic_numpy.py, quoted in the
README and checked there by tests/readme_snippets.rs) runs from the
repository root."""

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "logic_numpy.py"
REPO_ROOT = Path(__file__).resolve().parents[3]


def test_readme_snippet(claim):
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        cwd=REPO_ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "ischemic scar in AHA segments" in result.stdout
    assert "Segmentation done [0 1 2" in result.stdout
