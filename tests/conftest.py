"""Suite-wide settings: XLA's backend optimisation off and a persistent compilation cache for
each test process.

The tests run tiny programs a few steps each, so compiling them is most of the suite's time.
``--xla_backend_optimization_level=0`` skips LLVM's optimisation of the generated code (XLA's
own graph passes still run): the code runs slower and compiles much faster (the end-to-end file:
200 s of CPU before, 127 s with the cache alone, 101 s with both). Float results may differ in
the last bits from an optimised build; the tests compare runs made under the same flags, or
against independent values with a tolerance. It is added to ``XLA_FLAGS`` unless the caller's
flags set the level already; tests that start processes with their own ``XLA_FLAGS`` keep them.

Many tests build the same programs again (a rerun of a finished experiment, a resumed one, the
seeds of a study, a subprocess of the same config); with the cache each is compiled once per
pytest process and read back afterwards. The directory is exported through the environment, so
the subprocesses a test starts read and fill the same cache. An entry is keyed by the program,
the compile options and the devices, so it never changes what a test computes; an unreadable
entry (a process killed while writing it) is compiled again. A ``JAX_COMPILATION_CACHE_DIR``
set by the caller is used as it is and kept.
"""

import atexit
import os
import shutil
import tempfile

# Set in the environment of the process that made the directory, so that a process started from
# it (a pytest-xdist worker) makes its own rather than sharing one with a concurrent writer.
_OWNER = "GOALRANK_JAX_TEST_XLA_CACHE_OWNER"

if "JAX_COMPILATION_CACHE_DIR" not in os.environ or os.environ.get(_OWNER):
    _cache_dir = tempfile.mkdtemp(prefix="goalrank_jax_test_xla_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
    os.environ[_OWNER] = str(os.getpid())
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

import jax  # noqa: E402  (after the environment it reads)

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs",
    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
)
