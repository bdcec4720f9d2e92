"""Task layer: official-format loaders, metrics and splits for VQA v2, SNLI-VE and VCR,
plus the built-in synthetic VL world (`tasks.synthetic`)."""
