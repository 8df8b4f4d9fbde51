"""Benchmarks (``python -m benchmarks.bench_x`` from the repository root); shared helpers in ``common``.

Importing the package makes a hung benchmark diagnosable: SIGUSR1 prints every thread's Python stack to
stderr and the run goes on (``scripts/gpu_all.sh`` sends it before a stage's time limit, then SIGTERM for
the partial results), and fatal signals (SIGABRT, SIGSEGV) print them before the process dies.
"""

import faulthandler
import signal
import sys

if not faulthandler.is_enabled():
    faulthandler.enable(file=sys.stderr, all_threads=True)
if hasattr(signal, "SIGUSR1") and hasattr(faulthandler, "register"):
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True, chain=False)
