"""Pretrain a CLIP teacher (CLIP / DiHT / ALIP recipes).

    accelerate launch pretrain_teacher.py [--config configs/pretrain/diht.yaml] [dotted.key=value ...]

With no --config it trains the default teacher on the built-in synthetic world. The loop lives
in `pretrain.train.main`; this file is the thin entry point (docs/contracts.md section 1).
"""

import sys

from clip_td.base.scripts import run_script
from pretrain.train import main

if __name__ == "__main__":
    sys.exit(run_script(main, sys.argv[1:]))
