"""Run a grid of fine-tuning runs and report them.

    python sweep.py --config configs/sweep/smoke.yaml [dotted.key=value ...]

Writes <output_dir>/results.csv, summary.md and PNG plots; a rerun skips finished cells.
"""

from clip_td.app.sweep import main

if __name__ == "__main__":
    main()
