"""Run the KD Playground benchmarks as a script: `.venv/bin/python bench/run.py [--json] [--scaling] …`.

The same as `python -m kd_core bench`; see kd_core/engine/bench.py for what is measured and bench/RESULTS.md for
figures.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kd_core.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
