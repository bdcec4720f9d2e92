"""The built-in synthetic vision-language world (`clip-td data synth`).

Rendered scenes of 1-6 objects (8 shapes, 10 colours, 3 sizes, positions, spatial relations)
stand in for web images and the three benchmarks, in two rendering styles: `source` (flat
background) and `shift` (textured background, outlines, dim warm light, noise; same hues).
Task training splits and `val` use the source style only; `val_shift` uses the shifted one.
The teacher's pretraining corpus mixes both styles and carries controllable noise
(mismatched captions, low-complexity captions, text spotting) with the truth recorded.

Counts (medium; small = 1/20, large = 5x; world.json records the actual ones):
  pretrain  train 20000 pairs, val 2000 clean pairs, zero-shot 600 single-object images
  vqa       train 8000 questions / 2500 images, val and val_shift 1500 / 470 each
  snli_ve   train 6000 pairs / 2000 images, val and val_shift 1500 / 500 each
  vcr       train 4000 questions / 2000 images, val and val_shift 1000 / 500 each

Layout and TSV columns: docs/internals.md. Same seed and size give the same bytes: every
item draws from its own seeded RNG, so the number of rendering workers does not matter.
"""

from tasks.synthetic.pretrain_corpus import NoiseConfig
from tasks.synthetic.world import build_world, ensure_world

__all__ = ["build_world", "ensure_world", "NoiseConfig"]
