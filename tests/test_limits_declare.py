"""Admission limits declared with a task (``taskgate.limits``): each good and bad form, checked
when the task is declared, and what the dispatcher reads of them (``declared_json``,
``lane_of``)."""

from __future__ import annotations

import hashlib
import math
import warnings
from datetime import timedelta
from typing import Any

import orjson
import pytest
from celery.exceptions import CDeprecationWarning

import taskgate
from taskgate import registry
from taskgate.limits import Concurrency, RateLimit, declared_json, expiry_seconds, lane_of, parse_rate
from taskgate.registry import RetryPolicy, TaskSpec, build_spec


def send_email(to: str, customer: int, subject: str = "hello") -> None:
    """A task signature to key limits by."""


def spec_of(**limits: Any) -> TaskSpec:
    return build_spec(send_email, "send_email", "taskgate.send_email", RetryPolicy(), None, **limits)


@pytest.mark.parametrize(("text", "parsed"), [
    ("1/s", (1, 1.0)), ("100/m", (100, 60.0)), ("5/h", (5, 3600.0)), ("1000000/s", (1_000_000, 1.0)),
    ("007/m", (7, 60.0)),
])
def test_a_rate_reads_as_count_and_period(text: str, parsed: tuple[int, float]) -> None:
    assert parse_rate(text) == parsed


@pytest.mark.parametrize(("text", "problem"), [
    ("fast", "rate limit 'fast' is not '<count>/<s|m|h>' (e.g. \"100/m\")"),
    ("", "rate limit '' is not '<count>/<s|m|h>'"),
    ("100", "rate limit '100' is not '<count>/<s|m|h>'"),
    ("1/2/s", "rate limit '1/2/s' is not '<count>/<s|m|h>'"),
    ("0/s", "rate limit '0/s': the count must be from 1 to 1,000,000"),
    ("1000001/s", "the count must be from 1 to 1,000,000"),
    ("9" * 5000 + "/s", "the count must be from 1 to 1,000,000"),
    ("-1/m", "rate limit '-1/m': the count '-1' is not a positive whole number"),
    ("1e9/s", "the count '1e9' is not a positive whole number"),
    ("1.5/s", "the count '1.5' is not a positive whole number"),
    (" 10/s", "the count ' 10' is not a positive whole number"),
    ("10/d", "rate limit '10/d': the period 'd' is not one of s, m, h"),
    ("10/second", "the period 'second' is not one of s, m, h"),
    ("10/M", "the period 'M' is not one of s, m, h"),
])
def test_a_bad_rate_is_refused_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_rate(text)
    assert problem in str(refused.value)


def test_a_rate_that_is_no_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="rate limit 100 is not"):
        parse_rate(100)


def test_a_task_declares_a_rate_limit() -> None:
    spec = spec_of(rate_limit="120/m")
    assert spec.rate == RateLimit(count=120, period=60.0, burst=1, key="task")
    assert spec.rate.interval == 0.5
    assert spec.concurrency is None and spec.expires is None
    keyed = spec_of(rate_limit="10/s", rate_key="customer", burst=5)
    assert keyed.rate == RateLimit(count=10, period=1.0, burst=5, key="customer")
    assert spec_of(rate_limit="1/h", rate_key="owner").rate == RateLimit(1, 3600.0, 1, "owner")


@pytest.mark.parametrize(("limits", "error", "problem"), [
    ({"rate_limit": "fast"}, ValueError,
     "task 'send_email': rate_limit 'fast' is not '<count>/<s|m|h>' (e.g. \"100/m\")"),
    ({"rate_limit": "0/s"}, ValueError, "task 'send_email': rate_limit '0/s': the count must be from 1"),
    ({"rate_limit": 100}, TypeError, "task 'send_email': rate_limit 100 is not"),
    ({"rate_limit": "10/s", "rate_key": "tenant"}, ValueError,
     "task 'send_email': rate_key 'tenant' is not \"task\", \"owner\" or one of the task's arguments "
     "('to', 'customer', 'subject')"),
    ({"rate_limit": "10/s", "rate_key": 3}, TypeError, "task 'send_email': rate_key 3 must be a string"),
    ({"rate_key": "owner"}, ValueError, "task 'send_email': rate_key is given without rate_limit"),
    ({"burst": 3}, ValueError, "task 'send_email': burst is given without rate_limit"),
    ({"rate_limit": "10/s", "burst": 0}, ValueError, "task 'send_email': burst 0 must be a whole number from 1"),
    ({"rate_limit": "10/s", "burst": -2}, ValueError, "burst -2 must be a whole number from 1"),
    ({"rate_limit": "10/s", "burst": 2.5}, TypeError, "burst 2.5 must be a whole number"),
    ({"rate_limit": "10/s", "burst": True}, TypeError, "burst True must be a whole number"),
    ({"concurrency": Concurrency(2, key="tenant")}, ValueError,
     "task 'send_email': concurrency key 'tenant' is not \"task\", \"owner\" or one of the task's arguments"),
    ({"concurrency": 2}, TypeError, "task 'send_email': concurrency 2 must be taskgate.Concurrency("),
    ({"expires": 0}, ValueError, "task 'send_email': expires 0 must be more than 0 and at most 2592000 seconds"),
    ({"expires": -5}, ValueError, "task 'send_email': expires -5 must be more than 0"),
    ({"expires": math.nan}, ValueError, "task 'send_email': expires nan must be more than 0"),
    ({"expires": math.inf}, ValueError, "task 'send_email': expires inf must be more than 0"),
    ({"expires": 2_592_001}, ValueError, "expires 2592001 must be more than 0 and at most 2592000"),
    ({"expires": timedelta(days=31)}, ValueError, "expires datetime.timedelta(days=31) must be more than 0"),
    ({"expires": timedelta(0)}, ValueError, "must be more than 0"),
    ({"expires": "600"}, TypeError, "task 'send_email': expires '600' must be seconds"),
    ({"expires": True}, TypeError, "expires True must be seconds"),
])
def test_bad_limits_are_refused_at_declaration(limits: dict[str, Any], error: type[Exception],
                                               problem: str) -> None:
    with pytest.raises(error) as refused:
        spec_of(**limits)
    assert problem in str(refused.value)


@pytest.mark.parametrize(("args", "problem"), [
    ((0,), "Concurrency(limit=0): limit must be a whole number from 1 to 1,000,000"),
    ((-1,), "Concurrency(limit=-1)"),
    ((1.5,), "Concurrency(limit=1.5)"),
    ((True,), "Concurrency(limit=True)"),
    ((1_000_001,), "Concurrency(limit=1000001)"),
])
def test_a_bad_concurrency_limit_is_refused(args: tuple[Any, ...], problem: str) -> None:
    with pytest.raises(ValueError) as refused:
        Concurrency(*args)
    assert problem in str(refused.value)


def test_a_concurrency_key_must_be_a_name() -> None:
    with pytest.raises(TypeError, match=r"Concurrency\(key=''\): key must be"):
        Concurrency(2, key="")
    with pytest.raises(TypeError, match=r"Concurrency\(key=None\)"):
        Concurrency(2, key=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "error", "problem"), [
    ({"weights": {"acme": 3}}, ValueError, "Concurrency(weights=...): weights need a key (\"owner\" or an "
     "argument's name); with key=\"task\""),
    ({"key": "owner", "weights": [("acme", 3)]}, TypeError, "Concurrency(weights=...) [('acme', 3)] must be a "
     "mapping of key value (str) to weight (int)"),
    ({"key": "owner", "weights": {"acme": 0}}, ValueError, "weight 0 of 'acme' must be a whole number from 1 "
     "to 1,000"),
    ({"key": "owner", "weights": {"acme": 1001}}, ValueError, "weight 1001 of 'acme'"),
    ({"key": "owner", "weights": {"acme": 2.5}}, TypeError, "weight 2.5 of 'acme' must be a whole number"),
    ({"key": "owner", "weights": {"acme": True}}, TypeError, "weight True of 'acme'"),
    ({"key": "customer", "weights": {42: 2}}, TypeError, "key 42 must be a string (the key's value"),
    ({"key": "owner", "weights": {"o" * 201: 2}}, ValueError, "is over 200 characters"),
    ({"key": "owner", "weights": {f"o{i}": 2 for i in range(1001)}}, ValueError,
     "1001 keys, at most 1,000 may be weighted"),
])
def test_bad_weights_are_refused(kwargs: dict[str, Any], error: type[Exception], problem: str) -> None:
    with pytest.raises(error) as refused:
        Concurrency(2, **kwargs)
    assert problem in str(refused.value)


def test_weights_are_kept_read_only_and_published_for_admission() -> None:
    given = {"acme": 3, "42": 2}
    limit = Concurrency(2, key="customer", weights=given)
    given["acme"] = 1
    assert limit.weights == {"acme": 3, "42": 2}, "a copy, as declared"
    with pytest.raises(TypeError):
        limit.weights["acme"] = 5  # type: ignore[index]
    assert limit == Concurrency(2, "customer", {"42": 2, "acme": 3}) and hash(limit) == hash(Concurrency(2, "customer"))
    spec = spec_of(concurrency=limit)
    assert declared_json(spec) == '{"concurrency":2,"weights":{"acme":3,"42":2}}'
    assert declared_json(spec_of(concurrency=Concurrency(2, "owner"))) == '{"concurrency":2}', "none given, none sent"
    assert lane_of(spec, "alice", {"to": "x", "customer": 42}) == '["","42"]', "the key value a weight names"
    with pytest.raises(ValueError, match="task 'send_email': concurrency key 'tenant' is not"):
        spec_of(concurrency=Concurrency(1, key="tenant", weights={"a": 2}))


def test_a_task_declares_concurrency_and_expiry() -> None:
    spec = spec_of(concurrency=Concurrency(limit=3, key="to"), expires=timedelta(minutes=10))
    assert spec.concurrency == Concurrency(3, "to") and spec.expires == 600.0 and spec.rate is None
    assert spec_of(concurrency=taskgate.Concurrency(1)).concurrency == Concurrency(1, "task")
    assert spec_of(expires=0.5).expires == 0.5 and spec_of(expires=2_592_000).expires == 2_592_000.0
    assert expiry_seconds(30) == 30.0


def test_the_decorator_checks_its_limits_and_keeps_them(monkeypatch: pytest.MonkeyPatch) -> None:
    # The probe task is declared in a copy of the allow-list, told to no open Taskgate.
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry.exposed()))
    monkeypatch.setattr(registry, "_LISTENERS", [])
    with pytest.raises(ValueError, match="task 'limits_probe': rate_key 'nobody' is not"):
        @taskgate.task(name="limits_probe", rate_limit="5/s", rate_key="nobody")
        def refused(who: str) -> None:
            """Never declared."""

    with pytest.raises(ValueError, match="task 'limits_probe': expires -1 must be more than 0"):
        @taskgate.task(name="limits_probe", expires=-1)
        def refused_too(who: str) -> None:
            """Never declared."""

    @taskgate.task(name="limits_probe", rate_limit="5/s", rate_key="who", burst=2,
                   concurrency=taskgate.Concurrency(limit=1, key="owner"), expires=60)
    def limits_probe(who: str) -> str:
        """Declared with every limit."""
        return who

    assert limits_probe.spec.rate == RateLimit(5, 1.0, 2, "who")
    assert limits_probe.spec.concurrency == Concurrency(1, "owner")
    assert limits_probe.spec.expires == 60.0
    # Kept from Celery: its own rate_limit and expires are per worker, and taskgate's are not.
    # (Reading the Celery task binds every shared task to the default app: one another test of
    # this process declared with Celery's deprecated `queue` attribute would warn.)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CDeprecationWarning)
        celery_options = (limits_probe.celery_task.rate_limit, limits_probe.celery_task.expires)
    assert celery_options == (None, None)


def test_declared_json_is_what_admission_reads() -> None:
    assert declared_json(spec_of()) == ""
    assert declared_json(spec_of(expires=5)) == ""
    assert declared_json(spec_of(rate_limit="100/m")) == '{"rate":[100,60000,1]}'
    assert declared_json(spec_of(rate_limit="3/s", burst=4, rate_key="owner")) == '{"rate":[3,1000,4]}'
    assert declared_json(spec_of(concurrency=Concurrency(2, "owner"))) == '{"concurrency":2}'
    assert declared_json(spec_of(rate_limit="1/h", concurrency=Concurrency(5))) == \
        '{"rate":[1,3600000,1],"concurrency":5}'


def test_lane_of_names_the_rate_bucket_and_concurrency_key_of_a_run() -> None:
    run = {"to": "ann@example.com", "customer": 42, "subject": "hi"}
    assert lane_of(spec_of(), "alice", run) == '["",""]'
    assert lane_of(spec_of(rate_limit="1/s"), "alice", run) == '["",""]'
    assert lane_of(spec_of(rate_limit="1/s", rate_key="owner"), "alice", run) == '["alice",""]'
    assert lane_of(spec_of(concurrency=Concurrency(1, "to")), "alice", run) == '["","ann@example.com"]'
    both = spec_of(rate_limit="1/s", rate_key="customer", concurrency=Concurrency(1, "owner"))
    assert lane_of(both, "alice", run) == '["42","alice"]'
    # A non-string as its JSON text (dicts with sorted keys), a string as is.
    assert lane_of(both, "alice", run | {"customer": [1, {"b": 2, "a": None}]}) == \
        '["[1,{\\"a\\":null,\\"b\\":2}]","alice"]'
    assert lane_of(both, "alice", run | {"customer": True}) == '["true","alice"]'
    # An argument not given takes its default.
    keyed_by_subject = spec_of(concurrency=Concurrency(1, "subject"))
    assert lane_of(keyed_by_subject, "bob", {"to": "x", "customer": 1}) == '["","hello"]'
    assert orjson.loads(lane_of(keyed_by_subject, "bob", run)) == ["", "hi"]


def test_a_long_key_value_is_replaced_by_its_hash() -> None:
    spec = spec_of(rate_limit="1/s", rate_key="to", concurrency=Concurrency(1, "owner"))
    at_most = "a" * 200
    assert lane_of(spec, "alice", {"to": at_most, "customer": 1}) == f'["{at_most}","alice"]'
    longer = "é" * 201
    digest = hashlib.sha256(longer.encode()).hexdigest()
    assert lane_of(spec, "o" * 201, {"to": longer, "customer": 1}) == \
        f'["{digest}","{hashlib.sha256(b"o" * 201).hexdigest()}"]'


def test_rate_limits_and_concurrency_are_frozen_values() -> None:
    limit = Concurrency(2)
    with pytest.raises(AttributeError):
        limit.limit = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="count must be"):
        RateLimit(count=0, period=1.0)
    with pytest.raises(ValueError, match="period must be"):
        RateLimit(count=1, period=0.0)
    with pytest.raises(ValueError, match="burst must be"):
        RateLimit(count=1, period=1.0, burst=0)
    assert RateLimit(count=50, period=1.0).interval == 0.02
