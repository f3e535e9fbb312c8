"""Reports say where they were made: :mod:`lossverify.environment` and its use by the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lossverify import environment

REPO = str(Path(__file__).parents[1])
KEYS = {"lossverify", "tensorflow", "keras", "numpy", "hypothesis", "python", "cpu_model",
        "simd", "machine"}


def test_describe_has_every_key_and_real_versions():
    import hypothesis

    import lossverify

    env = environment.describe()
    assert set(env) == KEYS
    assert env["numpy"] == np.__version__
    assert env["lossverify"] == lossverify.__version__
    assert env["hypothesis"] == hypothesis.__version__
    assert env["python"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert env["machine"]
    for key in ("tensorflow", "keras"):
        assert env[key][:1].isdigit() or env[key] == "not installed"
    json.dumps(env)  # goes into the JSON reports as is


def test_describe_is_cached_and_returns_a_copy():
    a = environment.describe()
    a["simd"].append("mmx")
    a["numpy"] = "0"
    b = environment.describe()
    assert b == environment.describe() and "mmx" not in b["simd"] and b["numpy"] != "0"
    assert environment._describe.cache_info().currsize == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/cpuinfo is Linux's")
def test_cpu_model_and_simd_flags_on_linux():
    env = environment.describe()
    assert env["cpu_model"].strip() and env["cpu_model"] != "unknown"
    assert isinstance(env["simd"], list)
    assert set(env["simd"]) <= environment.SIMD_FLAGS
    assert env["simd"] == sorted(env["simd"])
    cpuinfo = Path("/proc/cpuinfo").read_text()
    flags = next((ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines()
                  if ln.startswith("flags")), [])
    assert env["simd"] == sorted(environment.SIMD_FLAGS.intersection(flags))


def test_unreadable_cpuinfo_gives_no_flags(monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError("no /proc here")

    environment._describe.cache_clear()
    monkeypatch.setattr(environment, "open", refuse, raising=False)  # the module's open()
    try:
        env = environment.describe()
    finally:
        monkeypatch.undo()
        environment._describe.cache_clear()
    assert env["simd"] == [] and env["cpu_model"]
    assert "no avx512f" in environment.summary_line(env)


def test_summary_line_names_versions_cpu_and_avx512f():
    env = environment.describe()
    line = environment.summary_line(env)
    assert "\n" not in line
    assert line.startswith(f"lossverify {env['lossverify']}, TensorFlow {env['tensorflow']}, "
                           f"Keras {env['keras']}, NumPy {env['numpy']}, "
                           f"Hypothesis {env['hypothesis']} on {env['cpu_model']} "
                           f"({env['machine']}; ")
    expected = "with avx512f" if "avx512f" in env["simd"] else "no avx512f"
    assert line.endswith(f"; {expected})")
    for flag in env["simd"]:
        assert flag in line


@pytest.mark.parametrize("simd, tail", [
    (["avx", "avx2", "fma"], "(x86_64; avx, avx2, fma; no avx512f)"),
    (["avx", "avx2", "avx512f", "fma"], "(x86_64; avx, avx2, avx512f, fma; with avx512f)"),
    ([], "(x86_64; no SIMD flags found; no avx512f)"),
])
def test_summary_line_says_whether_avx512f_is_there(simd, tail):
    env = {**environment.describe(), "simd": simd, "machine": "x86_64", "cpu_model": "AMD EPYC"}
    assert environment.summary_line(env).endswith(" on AMD EPYC " + tail)


def test_importing_environment_does_not_load_tensorflow():
    code = ("import sys, lossverify.environment as e; e.summary_line(e.describe()); "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True, cwd=REPO)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


# ------------------------------------------------------------------------------ CLI

# The conformance run, in-process with --jobs 2 (the workers are fresh processes): the
# parent computes the environment and still never imports TensorFlow.
CONFORMANCE = """
import sys
from lossverify import cli
code = cli.main(["verify", "--only", "mean_squared_error", "--max-examples", "2",
                 "--min-rows", "0", "--invariant-examples", "0", "--checks", "value",
                 "--no-progress", "--quiet", "--jobs", "2",
                 "--json", "c.json", "--markdown", "c.md"])
print("tensorflow in parent:", "tensorflow" in sys.modules)
sys.exit(code)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_cli_conformance_run_names_its_environment(tmp_path):
    pytest.importorskip("tensorflow")
    proc = subprocess.run([sys.executable, "-c", CONFORMANCE], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = environment.summary_line(environment.describe())
    lines = proc.stdout.splitlines()
    assert lines[0] == line and proc.stdout.count(line) == 1  # one header, before the table
    assert lines[1].startswith("loss ")
    assert "tensorflow in parent: False" in proc.stdout
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["schema_version"] == 2
    assert data["environment"] == environment.describe()
    assert data["runs"] and all(r["environment"] == data["environment"] for r in data["runs"])
    markdown = (tmp_path / "c.md").read_text()
    assert markdown.startswith(line + "\n\n# lossverify conformance (seed 0, ")


def test_cli_user_loss_run_prints_the_environment_first(tmp_path):
    pytest.importorskip("tensorflow")
    proc = subprocess.run(
        [sys.executable, "-m", "lossverify", "verify", "--loss",
         "keras.losses:mean_squared_error", "--reference", "mean_squared_error",
         "--max-examples", "2", "--min-rows", "0", "--checks", "value", "--json", "u.json"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = environment.summary_line(environment.describe())
    assert proc.stdout.splitlines()[0] == line and proc.stdout.count(line) == 1
    data = json.loads((tmp_path / "u.json").read_text())
    assert data["environment"] == environment.describe()
