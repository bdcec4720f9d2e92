"""Teacher pretraining (pretrain_teacher.py / `python -m pretrain`).

    train.py          the loop: Setup (built objects), PretrainTrainer, run / main
    config.py         PretrainConfig and load_pretrain_config (recipes from the `configs` package)
    clip_factory.py   builds the open_clip model (arch name, hf-hub:, local-dir: or a declared cfg)
    pretrain_model.py PretrainModel: the CLIP + training-only concept head, outputs as a dict
    losses.py         InfoNCE, HN-NCE, ALIP, concept KL: `forward_outputs(out) -> {"*_loss": ...}`
    alip_gates.py     ALIP's LCG / DCG gates (running means checkpointed)
    cat_filter.py     DiHT's CAT filter;  concepts.py  concept teachers and the KL
    data.py           captions corpus -> dataset
    metrics.py        retrieval, zero-shot and few-shot probe metrics
    teacher_eval.py   evaluates a trained teacher (`python -m pretrain.teacher_eval`)
    export.py         the one writer of open_clip's local-dir format (open_clip_config.json)
    default_teacher.py  the cached default teacher
"""
