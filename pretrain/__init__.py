"""Teacher pretraining: contrastive losses (InfoNCE, HN-NCE, ALIP), ALIP gates, CAT
filtering, concept distillation, evaluation and open_clip export."""
