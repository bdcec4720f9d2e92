"""Run a grid of fine-tuning runs and report them.

    python sweep.py --config configs/sweep/smoke.yaml [dotted.key=value ...]

Writes <output_dir>/results.csv, summary.md and PNG plots; a rerun skips finished cells.
"""

import sys

from clip_td.app.sweep import main
from clip_td.base.scripts import run_script

if __name__ == "__main__":
    sys.exit(run_script(main, sys.argv[1:]))
