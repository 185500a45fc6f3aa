"""The collector against its own OpenAPI document (schemathesis): generated requests, valid and
malformed, never crash it and get answers the document describes. Examples are bounded so the
suite stays quick; both backends.

Driven through schemathesis' Python API with plain hypothesis rather than its pytest plugin,
which breaks on some pytest releases."""

from __future__ import annotations

import pytest

from .collectorkit import collector, db_url, issue  # noqa: F401
from .conftest import IN_CI

try:
    import schemathesis
except ImportError:
    if IN_CI:  # a missing real part fails CI (see conftest.require)
        raise
    pytest.skip("schemathesis is not installed (pip install -e '.[test]')", allow_module_level=True)
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance  # noqa: E402

EXAMPLES = 20


def test_api_conforms(collector):
    admin = issue(collector.db, "root", "admin")
    schema = schemathesis.openapi.from_url(collector.url + "/openapi.json")
    # Through the schema's config (not per call), so a generated request without a token really is one.
    schema.config.headers = {"Authorization": f"Bearer {admin}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    negative = 0
    answered: dict[str, set] = {}
    for operation in operations:
        # Schema-valid is not enough for an upload: a record must also carry its true chain hash,
        # which no schema can say, so a valid-looking record may rightly get a per-item 400. And a
        # "wrong" item in a repeatable query parameter (null, a number) arrives as the text "null",
        # which is a fine value: the rejection check cannot apply there.
        excluded = [positive_data_acceptance]
        if any(p.get("schema", {}).get("type") == "array" for p in operation.definition.raw.get("parameters", [])):
            excluded.append(negative_data_rejection)
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case):
                response = case.call_and_validate(excluded_checks=excluded)
                answered.setdefault(operation.path, set()).add(response.status_code)

            try:
                check()
            except Unsatisfiable:
                # Nothing to get wrong in a request without parameters or body (GET /healthz).
                assert mode is schemathesis.GenerationMode.NEGATIVE
                continue
            negative += mode is schemathesis.GenerationMode.NEGATIVE
    assert negative >= 5
    # The token did travel: authenticated operations really answered, not just 401.
    assert all(200 in answered[path] for path in ("/v1/records", "/v1/whoami", "/v1/chains", "/v1/ingest"))


def test_audit_webhook_conforms(collector):
    """The webhook with its own credential: generated EventLists, valid and malformed, are
    stored or counted (200), never a crash; bodies that are not EventLists at all are too."""
    from .test_collector_audit import cluster_token

    token = cluster_token(collector.db, "gen", "https://gen.example:6443")
    schema = schemathesis.openapi.from_url(collector.url + "/openapi.json")
    schema.config.headers = {"Authorization": f"Bearer {token}"}
    [operation] = [r.ok() for r in schema.get_all_operations() if r.ok().path == "/v1/audit/webhook"]
    statuses = set()
    for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            # Counted, not refused: a refused batch would be lost whole, good events with the bad.
            response = case.call_and_validate(excluded_checks=[negative_data_rejection])
            statuses.add(response.status_code)

        check()
    assert statuses == {200}
