"""``import lossverify.reference`` must not load TensorFlow or Keras (DESIGN.md, section 1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROBE = """
import sys
import lossverify.reference as R
R.evaluate("focal_loss", [[0.0, 1.0]], [[0.3, 0.7]])
heavy = sorted(m for m in ("tensorflow", "keras", "jax", "torch") if m in sys.modules)
print(",".join(heavy))
"""


def test_reference_imports_numpy_only():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=120, check=True, cwd=Path(__file__).parents[1])
    assert done.stdout.strip() == "", f"lossverify.reference loaded {done.stdout.strip()}"
