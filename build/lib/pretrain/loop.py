"""The resumable step loop shared by teacher and student pretraining (fine-tuning's conventions).

A subclass sets, in its `__init__`: `cfg`, `acc` (the Accelerator), `out` (output folder),
`model`, `loader` (prepared), `total_steps`, `signature` (what a checkpoint must share with the run
resuming from it), `pos = {"step", "epoch", "batch"}`, `desc` (progress-bar label), `log`; and
implements `train_step(batch) -> terms`, `after_step(terms, bar)`, `checkpoint()`, `stats()`.
Resuming goes through `clip_td.base.checkpoints` (`train.resume`: a folder or `latest`, found by
the recorded step), then `skip_first_batches` inside the interrupted epoch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict

from accelerate.utils import set_seed
from tqdm.auto import tqdm

from clip_td.base.checkpoints import check_compatible, resolve_resume
from clip_td.base.config import save_config


def start_run(cfg: Any, accelerator: Any) -> None:
    """What every pretraining run does first: log on the main process, seed, and write the
    resolved config to `<output_dir>/config.yaml`."""
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING,
                        format="%(asctime)s %(message)s")
    set_seed(cfg.seed)
    if accelerator.is_main_process:
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        save_config(cfg, cfg.output_dir)


class ResumableLoop:
    desc = "pretrain"

    def resume(self) -> None:
        ckpt = resolve_resume(self.cfg.train.resume, self.out)
        if ckpt is None:
            return
        state = check_compatible(ckpt, self.signature, self.model)
        self.pos.update({k: int(state[k]) for k in self.pos})
        self.acc.load_state(str(ckpt))
        self.log.info("resumed from %s at step %d", ckpt, self.pos["step"])

    def fit(self) -> Dict[str, Any]:
        """Train to `total_steps`, save the final checkpoint; returns the train figures."""
        self.resume()
        bar = tqdm(total=self.total_steps, initial=self.pos["step"], disable=not self.acc.is_local_main_process,
                   desc=self.desc)
        self.model.train()
        try:
            while self.pos["step"] < self.total_steps:
                self.run_epoch(bar)
        finally:
            bar.close()
        self.checkpoint()
        return self.stats()

    def run_epoch(self, bar: Any) -> None:
        """One pass (the rest of it when resuming mid-epoch), stopping at `total_steps`."""
        epoch, skip = self.pos["epoch"], self.pos["batch"]
        self.loader.set_epoch(epoch)  # the data order depends only on (seed, epoch)
        loader = self.acc.skip_first_batches(self.loader, skip) if skip else self.loader
        for batch_i, batch in enumerate(loader, start=skip):
            terms = self.train_step(batch)
            if not self.acc.sync_gradients:
                continue  # an accumulation micro-batch: not an optimizer step yet
            self.pos.update(step=self.pos["step"] + 1, batch=batch_i + 1)
            self.after_step(terms, bar)
            if self.pos["step"] >= self.total_steps:
                return
        self.pos.update(epoch=epoch + 1, batch=0)
