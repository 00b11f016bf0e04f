import pytest

from ca.errors import (
    CAError,
    CAKeyError,
    InvalidCertificateSpec,
    InvalidDuration,
    InvalidName,
    InvalidPublicKey,
    KRLError,
    quote_value,
)


@pytest.mark.parametrize(
    ("error_class", "code"),
    [
        (CAError, "invalid_value"),
        (InvalidName, "invalid_name"),
        (InvalidPublicKey, "invalid_public_key"),
        (InvalidCertificateSpec, "invalid_certificate_spec"),
        (InvalidDuration, "invalid_duration"),
        (CAKeyError, "ca_key_error"),
        (KRLError, "krl_error"),
    ],
)
def test_default_codes(error_class, code):
    error = error_class("something is wrong")

    assert error.code == code
    assert error.field is None
    assert error.value is None
    assert isinstance(error, CAError)
    assert isinstance(error, ValueError)


def test_fields_and_message():
    error = InvalidName("invalid login 'a b'", code="invalid_login", field="login", value="a b")

    assert str(error) == "invalid login 'a b'"
    assert error.message == "invalid login 'a b'"
    assert error.code == "invalid_login"
    assert error.field == "login"
    assert error.value == "a b"
    assert repr(error) == (
        "InvalidName(\"invalid login 'a b'\", code='invalid_login', field='login', value='a b')"
    )


def test_quote_value_short():
    assert quote_value("db1") == "'db1'"
    assert quote_value(5) == "5"


def test_quote_value_long():
    text = quote_value("x" * 1000)

    assert text.startswith("'xxxx")
    assert text.endswith("... (1002 characters)")
    assert len(text) < 110
