"""clip-td: CLIP Targeted Distillation for vision-language fine-tuning.

Kept import-light on purpose: `tasks` and `pretrain` import `clip_td.base.config`,
`clip_td.base.registry` and `clip_td.base.io` without pulling in the training loop.
"""

__version__ = "0.1.0"
