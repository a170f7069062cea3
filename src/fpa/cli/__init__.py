"""The entry points (fpa-train, fpa-generate, fpa-eval, fpa-report, fpa-validate).

Importing this package runs before any entry point imports torch, which reads OpenMP's settings
once, at its first import: here OpenMP threads are told to wait passively unless the user chose
otherwise (``OMP_WAIT_POLICY``), since spinning threads made training steps up to 40× slower when
another process held a core of this project's 2-core machines (benchmarks/README.md).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
