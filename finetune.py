"""Fine-tune a VL student on VQA / SNLI-VE / VCR with CLIP Targeted Distillation.

    accelerate launch finetune.py                                   # synthetic VQA, low-shot, clip_td
    accelerate launch finetune.py --config configs/finetune/vcr.yaml train.fraction=0.05 seed=1
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 finetune.py   # 2 CPU processes (gloo)

Config = schema defaults (clip_td/app/schema.py) <- YAML <- dotted overrides. The loop,
shaped like accelerate's examples, is `clip_td.app.trainer.main`; it writes <output_dir>/config.yaml,
metrics.json and the official-format predictions of every eval split.
"""

import sys

from clip_td.app.trainer import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
