"""nox sessions for lossverify. ``nox -l`` lists them.

    tests      the test suite (pytest, 2 workers), then benchcheck's smoke run: what CI runs
    verify     the conformance report: every Keras built-in and notes' loss vs its reference
    thorough   the conformance report over every parameter combination, more examples
    bench      pytest-benchmark: the MNIST training step, verify's throughput, the CLI's
               usage errors; saved and compared with the last run
    benchcheck every benchmark once, untimed and at reduced sizes, so none of them rots
    lint       ruff
    typecheck  mypy on the typed package
    notf       lossverify.reference, the tolerance model and the strategies without TensorFlow
    frameworks PyTorch, JAX/optax and Keras-on-JAX/PyTorch losses without TensorFlow:
               close_to_reference, verify() in each framework, and the conformance
               matrix (lossverify verify --frameworks torch,jax,keras-jax,keras-torch)
    compat     the conformance report under the oldest Keras-3 TensorFlow and the newest
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests"]

OUT = "lossverify-out"


#: the benchmarks' smoke run: ``--benchmark-disable`` runs each benchmark once without
#: timing it (its correctness assertions still run), and LOSSVERIFY_BENCH_QUICK=1 skips the
#: multi-minute variants and shrinks the rest (benchmarks/conftest.py). No xdist: under it
#: pytest-benchmark disables itself anyway, and the full-run benchmark spawns 2 processes.
BENCHCHECK = ("pytest", "benchmarks", "--benchmark-disable", "-p", "no:cacheprovider")
BENCHCHECK_ENV = {"LOSSVERIFY_BENCH_QUICK": "1"}


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, then the benchmarks' smoke run (skipped when arguments select
    tests: ``nox -s tests -- tests/test_io.py`` runs only what it names)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-n", "2", "-m", "not slow", "-p", "no:cacheprovider",
                *session.posargs)
    if not session.posargs:
        session.run(*BENCHCHECK, env=BENCHCHECK_ENV)


#: the main job checks every dtype: half precision is where Keras's clip breaks down
ALL_DTYPES = "float32,float64,float16,bfloat16"


@nox.session
def verify(session: nox.Session) -> None:
    session.install("-e", ".[tf]")
    session.run("lossverify", "verify", "--dtypes", ALL_DTYPES, "--jobs", "2", "--quiet",
                "--json", f"{OUT}/conformance.json", "--markdown", f"{OUT}/conformance.md",
                "--plot", f"{OUT}/conformance.png", *session.posargs)


@nox.session
def thorough(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("lossverify", "verify", "--thorough", "--max-examples", "200", "--quiet",
                "--jobs", "2", "--json", f"{OUT}/thorough.json", "--markdown",
                f"{OUT}/thorough.md", "--plot", f"{OUT}/thorough.png", *session.posargs)
    session.run("pytest", "-n", "2", "-m", "slow", "-p", "no:cacheprovider",
                "--lossverify-profile=thorough", success_codes=[0, 5])


@nox.session
def bench(session: nox.Session) -> None:
    session.install("-e", ".[bench]")
    session.run("pytest", "benchmarks", "-p", "no:cacheprovider",
                f"--benchmark-json={OUT}/bench.json", "--benchmark-autosave",
                "--benchmark-compare", *session.posargs)
    session.run("lossverify", "bench", f"{OUT}/bench.json")


@nox.session
def benchcheck(session: nox.Session) -> None:
    """Every benchmark once, untimed, at the reduced sizes (the tests session's last step)."""
    session.install("-e", ".[bench]")
    session.run(*BENCHCHECK, *session.posargs, env=BENCHCHECK_ENV)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", "lossverify", "tests", "benchmarks", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[tf]", "mypy>=1.10")
    session.run("mypy", "lossverify")


@nox.session
def notf(session: nox.Session) -> None:
    """NumPy + Hypothesis only: what a PyTorch or JAX suite would install."""
    session.install("-e", ".[strategies]", "pytest>=8")
    session.run("python", "-c", "import sys, lossverify.reference, lossverify.strategies, "
                "lossverify.tolerance, lossverify.environment, lossverify.contract, "
                "lossverify.report, lossverify.closeness, lossverify.inputs; "
                "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'")
    session.run("pytest", "-p", "no:cacheprovider", "-p", "no:lossverify",
                "tests/test_reference_values.py", "tests/test_reference_gradients.py",
                "tests/test_reference_errors.py", "tests/test_reference_fuzz.py",
                "tests/test_tolerance.py", "tests/test_contract.py", "tests/test_closeness.py",
                "tests/test_inputs.py", "tests/test_records.py",
                "--doctest-modules", "lossverify/reference")


#: PyTorch's CPU-only wheels (PyPI's Linux wheel brings CUDA, gigabytes of it)
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

#: the frameworks session's environment: torch.compile's aot_eager backend (inductor works
#: where a C++ compiler is present, but compiles C++ for a minute or more per graph on 2
#: busy cores; ``-- -m slow`` adds tests/test_torch_verify.py's inductor test), and JAX's
#: persistent compilation cache in the session's own folder (JAX compiles per shape, even
#: op by op: a second run loads what the first compiled)
FRAMEWORKS_ENV = {"LOSSVERIFY_TORCH_COMPILE": "aot_eager",
                  "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                  "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


#: torch and the torchvision built against it (torchvision's compiled operators must
#: match torch's build: PyPI's torchvision beside another torch fails to import
#: ``torchvision.ops``, "operator torchvision::nms does not exist")
TORCH_WITH_VISION = ("torch==2.14.1", "torchvision==0.29.1")


def _install_torch(session: nox.Session) -> None:
    """torch with its matched torchvision (the matrix checks torchvision's
    ``sigmoid_focal_loss``): the CPU builds from PyTorch's index; where that is
    unreachable, the pair from pip's indexes (on this machine a CUDA build from local
    disk, which runs on the CPU). Failing both, PyTorch alone as before (the torchvision
    rows are then skipped, saying so): its CPU wheel from its own index, else a CPU wheel
    pip's find-links provide, else whatever pip finds."""
    for source in (("--index-url", TORCH_CPU_INDEX, "--retries", "0", "--timeout", "15"),
                   ()):
        try:
            session.install(*TORCH_WITH_VISION, *source)
            return
        except nox.command.CommandFailed:
            pass
    try:
        session.install("torch", "--index-url", TORCH_CPU_INDEX, "--retries", "0",
                        "--timeout", "15")
        return
    except nox.command.CommandFailed:
        pass
    try:
        session.install("torch", "--no-index", "--no-deps")
    except nox.command.CommandFailed:
        pass
    session.install("torch")


#: the conformance matrix's frameworks beside TensorFlow
MATRIX = "torch,jax,keras-jax,keras-torch"


@nox.session
def frameworks(session: nox.Session) -> None:
    """PyTorch, JAX/optax and Keras-on-JAX/PyTorch losses, with no TensorFlow installed:
    against the references through the NumPy-only tolerance API
    (``lossverify.close_to_reference``), through ``verify()`` with each framework's
    executor (tests/test_*_verify.py; the Keras file once per backend), then the
    conformance matrix (skipped when arguments select tests)."""
    session.install("-e", ".[strategies]", "pytest>=8")
    _install_torch(session)
    session.install("jax", "optax", "keras")
    session.run("python", "-c", "import importlib.util as u, torch, jax, optax; "
                "from importlib.metadata import version; "
                "assert u.find_spec('tensorflow') is None, 'TensorFlow is installed'; "
                "print('torch', torch.__version__, 'jax', jax.__version__, "
                "'optax', optax.__version__, 'keras', version('keras'))")
    env = {**FRAMEWORKS_ENV, "JAX_COMPILATION_CACHE_DIR": session.create_tmp() + "/jax-cache"}
    marks = () if "-m" in session.posargs else ("-m", "not slow")
    session.run("pytest", "-p", "no:cacheprovider", *marks, "tests/test_closeness.py",
                "tests/test_torch_closeness.py", "tests/test_jax_closeness.py",
                "tests/test_torch_verify.py", "tests/test_jax_verify.py",
                "tests/test_matrix.py", *session.posargs, env=env)
    for backend in ("jax", "torch"):
        session.run("pytest", "-p", "no:cacheprovider", *marks,
                    "tests/test_keras_backends_verify.py", *session.posargs,
                    env={**env, "KERAS_BACKEND": backend})
    if session.posargs:  # arguments select tests: no matrix run
        return
    # The conformance matrix (README, "Conformance matrix across frameworks"): each
    # reference's PyTorch and JAX counterparts and Keras 3 on JAX and PyTorch, no
    # TensorFlow in any process. Every row passes or is explained by a known deviation
    # of its implementation: a failed row (exit 1) fails the session, its findings in
    # the report.
    session.run("lossverify", "verify", "--frameworks", MATRIX, "--jobs", "2", "--quiet",
                "--json", f"{OUT}/matrix.json", "--markdown", f"{OUT}/matrix.md", env=env)


@nox.session
@nox.parametrize(("tensorflow", "keras"), [("2.16.2", "3.3.3"), ("2.21.0", "3.15.1")],
                 ids=["2.16.2", "2.21.0"])
def compat(session: nox.Session, tensorflow: str, keras: str) -> None:
    """The conformance report under one TensorFlow release with the Keras of its day
    (TensorFlow only asks for keras>=3, so an unpinned install gets today's Keras)."""
    session.install("-e", ".[tf]", f"tensorflow=={tensorflow}", f"keras=={keras}")
    session.run("python", "-c", "import tensorflow as tf, keras; "
                "print('tensorflow', tf.__version__, 'keras', keras.__version__)")
    # Exit 1 means "some run failed", but an uncaught exception also exits 1: only a
    # freshly written report tells the two apart (a crash must not pass, nor leave a
    # stale report from an earlier run in place).
    report = Path(OUT, f"compat-tf{tensorflow}.json")
    report.unlink(missing_ok=True)
    session.run("lossverify", "verify", "--quiet", "--json", str(report), *session.posargs,
                success_codes=[0, 1])
    install_only = session._runner.global_config.install_only  # nox has no public flag
    if not report.exists() and not install_only:
        session.error(f"lossverify verify crashed: no {report} written")
