"""Amounts: integer fils ↔ KWD with three decimals, exactly, on the way out and back."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from resayil_myfatoorah.money import (
    Kwd,
    decode_json,
    encode_json,
    fils_to_kwd_text,
    kwd_to_fils,
    parse_display_value,
)


@pytest.mark.parametrize(
    ("fils", "text"),
    [(0, "0.000"), (7, "0.007"), (100, "0.100"), (2500, "2.500"), (5000, "5.000"), (12345678, "12345.678")],
)
def test_fils_are_written_as_kwd_with_exactly_three_decimals(fils, text):
    assert fils_to_kwd_text(fils) == text


@pytest.mark.parametrize(
    ("value", "fils"),
    [
        (Decimal("5.000"), 5000),
        (Decimal("5"), 5000),
        (5, 5000),
        ("12,345.000", 12345000),
        ("0.1", 100),
        ("2.5", 2500),
        (Decimal("7.1E+1"), 71000),
    ],
)
def test_kwd_amounts_become_exact_fils(value, fils):
    assert kwd_to_fils(value) == fils


@pytest.mark.parametrize("value", [Decimal("5.0001"), "1.2345", Decimal("-1"), "abc", Decimal("NaN"), 5.0, True])
def test_amounts_that_are_not_whole_fils_or_are_floats_are_refused(value):
    with pytest.raises(ValueError):
        kwd_to_fils(value)


def test_negative_or_non_integer_fils_cannot_be_written():
    with pytest.raises(ValueError):
        fils_to_kwd_text(-1)
    with pytest.raises(ValueError):
        Kwd(1.5)  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=10**15))
def test_fils_round_trip_through_the_wire_text(fils):
    assert kwd_to_fils(fils_to_kwd_text(fils)) == fils


@given(st.integers(min_value=0, max_value=10**15))
def test_fils_round_trip_through_json_numbers(fils):
    wire = encode_json({"InvoiceValue": Kwd(fils), "Items": [{"UnitPrice": Kwd(fils)}]})
    assert f'"InvoiceValue":{fils_to_kwd_text(fils)}'.encode() in wire
    parsed = decode_json(wire)
    assert kwd_to_fils(parsed["InvoiceValue"]) == kwd_to_fils(parsed["Items"][0]["UnitPrice"]) == fils


def test_encoded_json_is_ordinary_json_with_numbers_not_strings():
    wire = encode_json({"InvoiceValue": Kwd(5000), "Name": "\x00not an amount", "Ok": True})
    assert wire.startswith(b'{"InvoiceValue":5.000,')
    assert orjson.loads(wire) == {"InvoiceValue": 5.0, "Name": "\x00not an amount", "Ok": True}


def test_decoded_json_numbers_are_decimals_never_floats():
    assert decode_json(b'{"a": 12.345, "b": 5}') == {"a": Decimal("12.345"), "b": 5}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5.000 KD", (5000, "KWD")),
        ("KD 12,345.500", (12345500, "KWD")),
        ("2.500 BHD", (2500, "BHD")),
        ("5.000", None),
        ("", None),
        ("five KD", None),
    ],
)
def test_invoice_display_value_gives_amount_and_iso_currency(text, expected):
    assert parse_display_value(text) == expected
