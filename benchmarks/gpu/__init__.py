"""The parts of ``benchmarks/bench_gpu.py`` (see that script's docstring for what each part measures).

Modules: :mod:`gpu.common` (time budget, timing, models, result files), :mod:`gpu.sampling` (sampling cost
per NFE), :mod:`gpu.overhead` (time outside the network: eager library step, compiled step, full sampler call,
CUDA-graphed loop), :mod:`gpu.fp16` (fp16 stability run), :mod:`gpu.throughput` (training throughput) and
:mod:`gpu.cli` (command line, budget shares, the run). The package is imported as ``gpu`` with
``benchmarks/`` on ``sys.path`` (the script arranges that, and so does this file for a direct import).
"""

import sys
from pathlib import Path

for _path in (Path(__file__).resolve().parents[1], Path(__file__).resolve().parents[2]):  # benchmarks/, the root
    if str(_path) not in sys.path:
        sys.path.append(str(_path))
