"""`python -m pretrain.student [--config PATH] [dotted.key=value ...]`: same as pretrain_student.py."""

import sys

from clip_td.base.scripts import run_script

from pretrain.student.train import main

if __name__ == "__main__":
    sys.exit(run_script(main, sys.argv[1:]))
