"""A CA in the user's Secret replaced: the old one stays trusted for spec.duration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kipsec_operator.certificates.issuer_trust import MAX_RETIRED, issuer_trust

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY = timedelta(hours=24)
OLD = b"-----BEGIN CERTIFICATE-----\nOLD\n-----END CERTIFICATE-----\n"
NEW = b"-----BEGIN CERTIFICATE-----\nNEW\n-----END CERTIFICATE-----\n"


def test_the_first_publication_trusts_the_secrets_ca_alone() -> None:
    trust = issuer_trust(OLD, {}, NOW, DAY)
    assert trust.bundle == OLD
    assert trust.status == {"issuerCA": OLD.decode().strip(), "retiredIssuerCAs": []}


def test_a_replaced_ca_stays_in_the_bundle_for_the_certificate_duration() -> None:
    before = issuer_trust(OLD, {}, NOW, DAY).status

    trust = issuer_trust(NEW, before, NOW, DAY)

    assert trust.bundle == NEW + OLD
    assert trust.status["retiredIssuerCAs"] == [
        {"certificate": OLD.decode().strip(), "until": (NOW + DAY).isoformat()}
    ]
    # The next publications keep it (and its end time) until then, and drop it after.
    later = issuer_trust(NEW, trust.status, NOW + DAY - timedelta(minutes=1), DAY)
    assert later.bundle == NEW + OLD and later.status == trust.status
    after = issuer_trust(NEW, trust.status, NOW + DAY, DAY)
    assert after.bundle == NEW and after.status["retiredIssuerCAs"] == []


def test_a_ca_put_back_is_current_not_retired_and_the_list_is_bounded() -> None:
    status = issuer_trust(NEW, issuer_trust(OLD, {}, NOW, DAY).status, NOW, DAY).status
    back = issuer_trust(OLD, status, NOW, DAY)
    assert back.bundle == OLD + NEW  # OLD current again; NEW retired
    assert [r["certificate"] for r in back.status["retiredIssuerCAs"]] == [NEW.decode().strip()]

    status = {}
    for n in range(MAX_RETIRED + 3):
        pem = f"-----BEGIN CERTIFICATE-----\nCA{n}\n-----END CERTIFICATE-----\n".encode()
        status = issuer_trust(pem, status, NOW, DAY).status
    assert len(status["retiredIssuerCAs"]) == MAX_RETIRED


def test_malformed_status_entries_are_dropped_not_trusted() -> None:
    status = {
        "issuerCA": NEW.decode(),
        "retiredIssuerCAs": [
            "not a mapping",
            {"certificate": 3, "until": (NOW + DAY).isoformat()},
            {"certificate": OLD.decode(), "until": "tomorrow"},
        ],
    }
    assert issuer_trust(NEW, status, NOW, DAY).bundle == NEW
