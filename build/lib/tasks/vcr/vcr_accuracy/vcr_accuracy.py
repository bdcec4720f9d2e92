"""`evaluate` module: VCR Q->A, QA->R and Q->AR (percent). Load offline from this folder:
`evaluate.load("<repo>/tasks/vcr/vcr_accuracy")`."""

import datasets
import evaluate

from tasks.vcr.metrics import vcr_scores

_DESCRIPTION = "VCR: Q->A and QA->R accuracy, and Q->AR = percent of instances with both right."
_KWARGS = """
Args:
    predictions: list of [answer, rationale] int pairs (0-3).
    references: list of [answer_label, rationale_label] int pairs.
Returns: {"q2a": float, "qa2r": float, "q2ar": float} (percent)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class VcrAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("int32")), "references": datasets.Sequence(datasets.Value("int32"))}
            ),
        )

    def _compute(self, predictions, references):
        return vcr_scores(predictions, references)
