"""Settings read from the environment (``taskgate.config``): the ones parsed from text, each bad
form refused naming the variable."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from taskgate.config import Settings


def test_fair_weights_read_as_owner_weight_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKGATE_FAIR_WEIGHTS", " acme=3, beta = 2,,team=a=5")
    assert Settings().fair_weights == {"acme": 3, "beta": 2, "team=a": 5}, "an owner may hold '='"
    monkeypatch.setenv("TASKGATE_FAIR_WEIGHTS", "")
    assert Settings().fair_weights == {}
    assert Settings(fair_weights={"acme": 1000}).fair_weights == {"acme": 1000}


@pytest.mark.parametrize(("text", "problem"), [
    ("acme", "TASKGATE_FAIR_WEIGHTS: write comma-separated owner=weight, each weight a whole number from 1 "
     "to 1,000 (e.g. acme=3,beta=2); 'acme' is not"),
    ("=3", "'=3' is not"),
    ("acme=", "'acme=' is not"),
    ("acme=x", "'acme=x' is not"),
    ("acme=-1", "'acme=-1' is not"),
    ("acme=²", "'acme=²' is not"),
    ("acme=1" + "0" * 20, "is not"),
    ("acme=0", "TASKGATE_FAIR_WEIGHTS: weight 0 of 'acme' must be a whole number from 1 to 1,000"),
    ("acme=1001", "weight 1001 of 'acme'"),
    ("acme=2,acme=3", "TASKGATE_FAIR_WEIGHTS: owner 'acme' is given twice"),
    ("o" * 201 + "=2", "TASKGATE_FAIR_WEIGHTS: key 'oooooooooooooooooooo'... is over 200 characters"),
])
def test_bad_fair_weights_are_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch, text: str,
                                                         problem: str) -> None:
    monkeypatch.setenv("TASKGATE_FAIR_WEIGHTS", text)
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert problem in str(refused.value)
