"""Pretrain a ViLT student (MLM + ITM) on the source-style captions corpus.

    accelerate launch pretrain_student.py [--config configs/pretrain_student/default.yaml] [dotted.key=value ...]

With no --config it uses the shipped recipe on the built-in synthetic world. Fine-tune from the
result with `finetune.py student.pretrained=<output_dir>/student`. The loop lives in
`pretrain.student.train.main`; this file is the thin entry point.
"""

import sys

from clip_td.base.scripts import run_script
from pretrain.student.train import main

if __name__ == "__main__":
    sys.exit(run_script(main, sys.argv[1:]))
