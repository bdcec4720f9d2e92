"""`evaluate` module: SNLI-VE accuracy (percent). Load offline from this folder:
`evaluate.load("<repo>/tasks/snli_ve/snli_ve_accuracy")`."""

import datasets
import evaluate

from tasks.snli_ve.metrics import accuracy

_DESCRIPTION = "SNLI-VE accuracy: percent of label predictions (0 entailment, 1 neutral, 2 contradiction) equal to gold."
_KWARGS = """
Args:
    predictions: list of int labels.
    references: list of int gold labels.
Returns: {"accuracy": float (percent)}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class SnliVeAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references):
        return {"accuracy": accuracy(predictions, references)}
