"""Student pretraining (pretrain_student.py / `python -m pretrain.student`): ViLT's own
objectives on the source-style rows of the captions corpus, exported as a folder that
fine-tuning loads with `student.pretrained=<output_dir>/student`.

    config.py      StudentPretrainConfig and load_student_config (recipe from the `configs` package)
    objectives.py  mask_tokens (BERT masking) and itm_negatives (a derangement of the captions)
    data.py        source-style rows, the WordPiece tokenizer, the image dataset and collate
    model.py       StudentPretrainModel: ViltForMaskedLM + the ITM head, losses as a dict
    export.py      the student folder: ViltModel weights, tokenizer, ViltImageProcessor config
    train.py       the loop (accelerate), the held-out evaluation, run / main
    default_student.py  the default pretrained student (finetune.py's student.pretrained=default),
                   trained once into the cache

The ITM head is a `nn.Linear(hidden, 2)` on ViLT's pooled output (ViLT's own ITM head, cross
entropy), kept in the training wrapper and not exported; the pooler it trains is exported.
"""

from pretrain.student.config import StudentPretrainConfig, load_student_config
from pretrain.student.objectives import itm_negatives, mask_tokens

__all__ = ["StudentPretrainConfig", "itm_negatives", "load_student_config", "mask_tokens"]
