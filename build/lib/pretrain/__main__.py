"""`python -m pretrain [--config PATH] [dotted.key=value ...]`: same as pretrain_teacher.py."""

import sys

from clip_td.base.scripts import run_script

from pretrain.train import main

if __name__ == "__main__":
    sys.exit(run_script(main, sys.argv[1:]))
