"""Start-up: ``import modelfusion`` and ``modelfusion --help``, ours (lazy) vs importing the whole API.

Each case runs in a fresh interpreter (what a user pays), seven times interleaved, and the
median is kept. The baseline is what the package cost before it became lazy: ``import
modelfusion`` followed by touching every public name, which imports torch, scikit-learn,
scipy and ONNX Runtime. Targets (issue 17): ``--help`` < 1 s, ``import modelfusion`` < 1.5 s.

``python benchmarks/startup.py``; about 1 minute on 2 CPU cores.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROUNDS = 7
CLI = shutil.which("modelfusion") or str(Path(sys.executable).with_name("modelfusion"))
CASES = {
    "import modelfusion": [sys.executable, "-c", "import modelfusion"],
    "modelfusion --help": [CLI, "--help"],
    "modelfusion --version": [CLI, "--version"],
    "baseline: the whole API": [
        sys.executable,
        "-c",
        "import modelfusion as m; [getattr(m, n) for n in m.__all__]",
    ],
}
TARGETS = {"import modelfusion": 1.5, "modelfusion --help": 1.0}


def main() -> None:
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(ROUNDS):
        for name, command in CASES.items():  # interleaved: a noisy moment hits every case
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    baseline = statistics.median(times["baseline: the whole API"])
    print(f"{'case':<26}{'median s':>10}{'vs whole API':>14}  target")
    for name, values in times.items():
        median = statistics.median(values)
        target = TARGETS.get(name)
        verdict = "" if target is None else f"< {target} s: {'MET' if median < target else 'MISS'}"
        print(f"{name:<26}{median:>10.3f}{baseline / median:>13.1f}x  {verdict}")


if __name__ == "__main__":
    main()
