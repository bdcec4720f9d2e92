"""One error path for every entry script (finetune.py, pretrain_teacher.py, sweep.py, clip-td).

    sys.exit(run_script(main, sys.argv[1:]))

A user-caused problem (`InputError`: a bad file, config key or registry name) prints one line
`error: ...` on the main process and exits 2; a diverged run (`TrainingDiverged`) exits 3. Any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional, Sequence

from clip_td.base.io import InputError


class TrainingDiverged(RuntimeError):
    """A non-finite loss: the message gives the step and every loss term."""


EXIT_CODES = {InputError: 2, TrainingDiverged: 3}


def run_script(main: Callable[[Optional[Sequence[str]]], Any], argv: Optional[Sequence[str]] = None) -> int:
    """Call `main(argv)`; map the user-facing errors to one line on stderr and an exit code."""
    try:
        main(argv)
    except (InputError, TrainingDiverged) as e:
        if os.environ.get("RANK", "0") == "0":  # one message, not one per process
            print(f"error: {e}", file=sys.stderr)
        return EXIT_CODES[InputError if isinstance(e, InputError) else TrainingDiverged]
    return 0
