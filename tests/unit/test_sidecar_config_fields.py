"""The configuration model's own validation layer (kipsec_sidecar.config.fields).

The document's tests (test_sidecar_config.py, the fuzz tests) pin what documents are
accepted and the messages users read; these pin the layer's behaviour they do not reach
directly: pydantic's lax coercions, which the layer keeps so that no document changes
meaning, error collection and order, frozen records and masked secrets.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest

from kipsec_sidecar.config.errors import FieldError
from kipsec_sidecar.config.fields import Field, Model, ModelError, SecretStr
from kipsec_sidecar.config.model import Identity, Lifetimes, Psk


class Inner(Model):
    count: int = 0
    ratio: Annotated[float, Field(ge=0, lt=1)] = 0.5


class Outer(Model):
    name: Annotated[str, Field(pattern=r"^[a-z]+$")]
    enabled: bool = True
    level: Literal[1, 2, "auto"] = 1
    items: Annotated[list[Inner], Field(min_length=1, max_length=2)] | None = None
    secret: SecretStr | None = None


def errors(data: dict[str, Any], model: type[Model] = Outer) -> list[FieldError]:
    with pytest.raises(ModelError) as caught:
        model.model_validate(data)
    return list(caught.value.errors)


@pytest.mark.parametrize(
    ("given", "stored"),
    [(7, 7), (2.0, 2), ("12", 12), (" 1_000 ", 1000), ("12.00", 12), (True, 1), (b"3", 3)],
)
def test_an_int_field_takes_what_pydantic_lax_mode_took(given: object, stored: int) -> None:
    assert Inner.model_validate({"count": given}).count == stored


@pytest.mark.parametrize("given", [1.5, "0x10", "1e3", "", "１２", [1], None])
def test_an_int_field_refuses_the_rest(given: object) -> None:
    assert errors({"count": given}, Inner) == [FieldError("count", "must be an integer")]


@pytest.mark.parametrize("digits", [4301, 100_000])
def test_an_int_field_refuses_more_digits_than_python_converts(digits: int) -> None:
    # int() raises its own ValueError past 4,300 digits: a field error, not a crash
    # (pydantic said the same for such input).
    assert errors({"count": "1" * digits}, Inner) == [
        FieldError("count", "Unable to parse input string as an integer, exceeded maximum size")
    ]
    assert Inner.model_validate({"count": "0" * 4299 + "7"}).count == 7


def test_floats_take_numeric_strings_and_refuse_nan_and_bounds() -> None:
    assert Inner.model_validate({"ratio": " .25 "}).ratio == 0.25
    assert errors({"ratio": "nan"}, Inner) == [FieldError("ratio", "must be a finite number")]
    assert errors({"ratio": 1}, Inner) == [FieldError("ratio", "must be less than 1")]
    assert errors({"ratio": "x"}, Inner) == [FieldError("ratio", "must be a number")]


@pytest.mark.parametrize(
    ("given", "stored"),
    [("yes", True), ("OFF", False), ("t", True), ("0", False), (1, True), (0.0, False)],
)
def test_a_bool_field_takes_the_words_and_numbers_pydantic_took(
    given: object, stored: bool
) -> None:
    assert Outer.model_validate({"name": "a", "enabled": given}).enabled is stored


@pytest.mark.parametrize("given", [2, 0.5, "maybe", " true", None])
def test_a_bool_field_refuses_the_rest(given: object) -> None:
    assert errors({"name": "a", "enabled": given}) == [
        FieldError("enabled", "must be true or false")
    ]


def test_strings_literals_and_patterns() -> None:
    assert errors({"name": 5}) == [FieldError("name", "must be a string")]
    # `$` is the end of the text, not "before a final newline" as Python's re has it.
    assert errors({"name": "abc\n"}) == [FieldError("name", "must match pattern '^[a-z]+$'")]
    assert Outer.model_validate({"name": "a", "level": 2.0}).level == 2
    assert errors({"name": "a", "level": "2"}) == [FieldError("level", "must be 1, 2 or 'auto'")]


def test_every_error_is_collected_fields_first_then_unknown_keys() -> None:
    data = {"nmae": "x", "items": [{"count": "x"}, {"ratio": 2}], "enabled": "x", "zzz": 1}
    assert errors(data) == [
        FieldError("name", "required"),
        FieldError("enabled", "must be true or false"),
        FieldError("items[0].count", "must be an integer"),
        FieldError("items[1].ratio", "must be less than 1"),
        FieldError("nmae", "unknown field 'nmae'; did you mean 'name'?"),
        FieldError(
            "zzz", "unknown field 'zzz'; known fields here: name, enabled, level, items, secret"
        ),
    ]


def test_a_list_too_long_reports_only_its_length() -> None:
    data = {"name": "a", "items": [{"count": "x"}] * 3}
    assert errors(data) == [
        FieldError("items", "must have at most 2 items after validation, not 3")
    ]


def test_keys_are_camel_case_or_the_python_name_but_not_both() -> None:
    assert Lifetimes.model_validate({"ike_sa": "1h"}).ike_sa == 3600.0
    assert Lifetimes.model_validate({"ikeSa": "1h"}).model_fields_set == {"ike_sa"}
    assert errors({"ikeSa": "1h", "ike_sa": "2h"}, Lifetimes) == [
        FieldError("ike_sa", "unknown field 'ike_sa'; did you mean 'ikeSa'?")
    ]


def test_records_are_frozen_and_copies_record_what_was_set() -> None:
    lifetimes = Lifetimes.model_validate({"jitter": 0.2})
    with pytest.raises(AttributeError):
        lifetimes.jitter = 0.3  # type: ignore[misc]
    changed = lifetimes.model_copy(update={"ike_sa": 60.0})
    assert (changed.jitter, changed.ike_sa, lifetimes.ike_sa) == (0.2, 60.0, 4 * 3600.0)
    assert changed.model_fields_set == {"jitter", "ike_sa"}
    assert changed.model_dump(mode="json", exclude_unset=True) == {"ikeSa": "1m", "jitter": 0.2}


def test_a_record_level_check_reports_at_the_records_path() -> None:
    assert errors({"fqdn": "a.example", "keyId": "k"}, Identity) == [
        FieldError("", "give exactly one of fqdn, address, email, dn, keyId (found fqdn, keyId)")
    ]


def test_secrets_are_masked_and_never_in_errors() -> None:
    secret = "a-secret-that-is-long-enough"
    psk = Psk.model_validate({"value": secret})
    assert psk.value is not None and psk.value.get_secret_value() == secret
    shown = [repr(psk), str(psk), psk.model_dump_json(), str(psk.model_dump())]
    assert all(secret not in text for text in shown)
    assert psk.model_dump(mode="json") == {"secretFile": None, "value": "**********"}
    with pytest.raises(ModelError) as caught:
        Psk.model_validate({"value": "s3cr3t"})
    assert "s3cr3t" not in str(caught.value)
