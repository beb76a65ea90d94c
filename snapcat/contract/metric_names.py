"""Names of the live, per-model-version metrics: one source of truth for the side that exports them
(the transformer, the feedback sink) and the side that reads them back (``snapcat rollout analyze``).

Every series is labelled by ``model_version`` (the version that answered, as the model's signature
reports it), plus at most one more bounded label: ``outcome`` (five values) or ``category`` (the
model's classes). Prometheus client libraries add ``_total`` to counters and ``_bucket`` /
``_count`` / ``_sum`` to histograms; the constants below are the names as queried.
"""

from __future__ import annotations

VERSION_LABEL = "model_version"

#: Requests by outcome; every request the transformer answers counts once.
REQUESTS = "snapcat_model_requests_total"
OUTCOME_LABEL = "outcome"
OK = "ok"
CLIENT_ERROR = "client_error"  # the request or photo was bad (4xx except overload)
PREDICTOR_ERROR = "predictor_error"  # the predictor failed or answered nonsense (5xx)
OVERLOAD = "overload"  # refused for lack of capacity (429/503)
#: a 5xx the transformer answered on its own, no model at fault: an unsupported route or
#: version (501), its own bug (500); never part of a version's error rate
REFUSED = "refused"
OUTCOMES = (OK, CLIENT_ERROR, PREDICTOR_ERROR, OVERLOAD, REFUSED)

#: Seconds from request received to response ready (histogram).
LATENCY = "snapcat_model_request_seconds"
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)

#: The best category's score of each answered photo (histogram).
TOP1_SCORE = "snapcat_model_top1_score"
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)

#: Answered photos by their best category.
PREDICTIONS = "snapcat_model_predictions_total"
CATEGORY_LABEL = "category"

#: Sellers' final categories received for a prediction, and how many agreed with its top 1 / top 3
#: (exported by the feedback sink).
FEEDBACK = "snapcat_feedback_total"
FEEDBACK_TOP1 = "snapcat_feedback_top1_agreements_total"
FEEDBACK_TOP3 = "snapcat_feedback_top3_agreements_total"
#: The same for answers flagged ``confident``: whether they keep their top-3 promise
#: (:mod:`snapcat.feedback.promise`), and whether the sink finds it broken (gauge, 0/1).
FEEDBACK_CONFIDENT = "snapcat_feedback_confident_total"
FEEDBACK_CONFIDENT_TOP3 = "snapcat_feedback_confident_top3_agreements_total"
CONFIDENT_PROMISE_BROKEN = "snapcat_feedback_confident_promise_broken"


def counter_name(queried: str) -> str:
    """The name to give ``prometheus_client.Counter`` so it exports ``queried`` (it adds _total)."""
    return queried.removesuffix("_total")
