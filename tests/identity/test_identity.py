"""deepskin.services.identity: operators and clinicians verified the same way, and Google's certificates cached
with a bounded refresh (the fetcher injected, so no test needs a network)."""

from __future__ import annotations

import pytest

from deepskin.core.refused import Refused
from deepskin.services import identity

OPS_AUDIENCE = "https://europe-west1-p.cloudfunctions.net/deepskin-ops"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def failing_after(certs: dict, successes: int):
    """A fetcher that answers `successes` times, then fails like an unreachable network; it counts its calls."""
    calls = []

    def fetch() -> dict:
        calls.append(1)
        if len(calls) > successes:
            raise OSError("network unreachable")
        return certs

    return fetch, calls


def test_certificates_are_fetched_once_and_refreshed_after_the_refresh_period():
    fetch, calls = failing_after({"k": "cert"}, successes=2)
    clock = Clock()
    certs = identity.Certificates(fetch, clock)
    assert certs.current() == {"k": "cert"} and certs.current() == {"k": "cert"} and len(calls) == 1
    clock.now += identity.CERTS_REFRESH_S
    assert certs.current() == {"k": "cert"} and len(calls) == 2


def test_a_failed_refresh_serves_the_cached_certificates_within_a_bound():
    fetch, calls = failing_after({"k": "cert"}, successes=1)
    clock = Clock()
    certs = identity.Certificates(fetch, clock)
    certs.current()
    clock.now += identity.CERTS_REFRESH_S
    assert certs.current() == {"k": "cert"} and len(calls) == 2  # failed: the cache answers
    clock.now += identity.CERTS_RETRY_S / 2
    assert certs.current() == {"k": "cert"} and len(calls) == 2  # no new try before CERTS_RETRY_S
    clock.now += identity.CERTS_RETRY_S
    assert certs.current() == {"k": "cert"} and len(calls) == 3
    clock.now += identity.CERTS_MAX_AGE_S  # the cache is too old to stand in any longer
    with pytest.raises(Refused) as refused:
        certs.current()
    assert (refused.value.status, refused.value.code) == (503, "identity_unavailable")


def test_with_nothing_cached_a_failed_fetch_is_a_named_503():
    fetch, calls = failing_after({}, successes=0)
    certs = identity.Certificates(fetch, Clock())
    for _ in range(2):  # each request tries again
        with pytest.raises(Refused) as refused:
            certs.current()
        assert refused.value.code == "identity_unavailable"
    assert len(calls) == 2


@pytest.mark.usefixtures("clean_firestore")
def test_on_cloud_run_only_a_verified_operator_reads_the_ops_page(ops_client, monkeypatch, google_tokens, clinician):
    """Being invoked on Cloud Run is no proof: IAM may admit a caller (X-Serverless-Authorization) whose
    Authorization header says anything, so the function checks the operator itself."""
    monkeypatch.setenv("K_SERVICE", "deepskin-ops")
    monkeypatch.setenv("DEEPSKIN_OPS_AUDIENCES", OPS_AUDIENCE)
    monkeypatch.setenv("DEEPSKIN_OPERATORS", "ops@example.org")
    monkeypatch.setenv("DEEPSKIN_CLINICIANS", "derm@example.org")
    for headers in ({}, clinician, {"Authorization": "Bearer forged"},
                    google_tokens.bearer("derm@example.org", OPS_AUDIENCE),  # a clinician is not an operator
                    google_tokens.bearer("ops@example.org", "https://elsewhere.example"),
                    google_tokens.bearer("ops@example.org", OPS_AUDIENCE, email_verified=False)):
        response = ops_client.get("/", headers=headers)
        assert (response.status_code, response.get_json()["error"]) == (403, "operator_identity_required"), headers
    assert ops_client.get("/", headers=google_tokens.bearer("Ops@example.org", OPS_AUDIENCE)).status_code == 200
    monkeypatch.delenv("DEEPSKIN_OPERATORS")  # unset: nobody
    assert ops_client.get("/", headers=google_tokens.bearer("ops@example.org", OPS_AUDIENCE)).status_code == 403
