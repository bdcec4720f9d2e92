"""`evaluate` module: official VQA v2 accuracy. Load offline from this folder:
`evaluate.load("<repo>/tasks/vqa/vqa_accuracy")`."""

import datasets
import evaluate

from tasks.vqa.metrics import vqa_accuracy

_DESCRIPTION = """VQA accuracy as the official vqaEval.py computes it: the prediction normalised,
the ground truths punctuation-processed only when they disagree (rule="symmetric": both fully
normalised only when the ground truths disagree); per question the mean over the 10 leave-one-out subsets of
min(1, matches / 3); overall, perQuestionType, perAnswerType = 100 x mean, rounded to 2 decimals."""

_KWARGS = """
Args:
    predictions: list of answer strings.
    references: list of lists of the 10 ground-truth answer strings.
    question_types, answer_types (optional): lists of strings for the per-type scores.
    rule (optional): "official" (default) or "symmetric".
Returns: {"overall": float, "perQuestionType": {..}, "perAnswerType": {..}}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class VqaAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
        )

    def _compute(self, predictions, references, question_types=None, answer_types=None, rule="official"):
        return vqa_accuracy(predictions, references, question_types, answer_types, rule)
