"""The live check of the ``confident`` promise (snapcat.feedback.promise), and the response
parsing it needs."""

from __future__ import annotations

import pytest

from snapcat.feedback.events import response_confident
from snapcat.feedback.promise import MIN_CONFIDENT_FEEDBACK, agreement_upper_bound, check_promise


@pytest.mark.parametrize(
    ("answers", "agreed", "broken"),
    [
        (100, 97, False),  # 97 %: keeps it
        (100, 92, False),  # 92 %: upper bound 95.6 %, within chance of 95 %
        (100, 85, True),  # 85 %: upper bound 90.7 %
        (200, 180, True),
        (MIN_CONFIDENT_FEEDBACK - 1, 0, None),  # too few to tell, however bad
    ],
)
def test_promise_is_broken_only_beyond_chance(answers, agreed, broken):
    assert check_promise(answers, agreed).broken is broken


def test_upper_bound_known_values():
    # all agreeing: upper bound 1; none of n: 1 - 0.05 ** (1/n)
    assert agreement_upper_bound(50, 50) == pytest.approx(1.0)
    assert agreement_upper_bound(0, 59) == pytest.approx(1 - 0.05 ** (1 / 59), abs=1e-9)


def test_confident_flags_from_v1_and_v2_responses():
    a, b = "a" * 32, "b" * 32
    v1 = {"predictions": [{"prediction_id": a, "confident": True}, {"prediction_id": b}]}
    assert response_confident(v1) == {a}
    v2 = {
        "outputs": [
            {"name": "prediction_id", "data": [a, b]},
            {"name": "confident", "data": [False, True]},
        ]
    }
    assert response_confident(v2) == {b}
    assert response_confident({"outputs": []}) == set() == response_confident("nonsense")
