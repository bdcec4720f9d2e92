"""The shipped YAML configs (finetune/, pretrain/, sweep/), installed as package data so
`--config configs/...` and the recipes' defaults load the same way from a non-editable install."""
