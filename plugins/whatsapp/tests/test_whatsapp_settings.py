"""The ``[whatsapp]`` section, loaded through the core: defaults, the token rule, admin phones, Meta's settings."""

from __future__ import annotations

import pytest
from resayil_whatsapp.recipients import NotE164, e164
from resayil_whatsapp.settings import WhatsAppSettings, is_loopback_url

from resayil_gateway.config import ConfigError, load_settings

SECRET = "tok-9f8e7d6c5b4a"


def load(**env: str) -> WhatsAppSettings:
    variables = {f"RESAYIL_WHATSAPP__{key.upper()}": value for key, value in env.items()}
    return load_settings(env=variables, plugin_sections={"whatsapp": WhatsAppSettings}).section("whatsapp")


def test_defaults_match_the_documented_configuration():
    settings = load()
    assert (settings.transport, settings.base_url, settings.admin_phones) == ("resayil", "https://api.resayil.io", ())
    assert settings.token.get_secret_value() == ""
    assert (settings.meta_base_url, settings.meta_api_version) == ("https://graph.facebook.com", "v24.0")
    assert (settings.meta_template, settings.meta_template_language, settings.timeout_s) == ("", "ar", 10.0)


def test_without_a_token_and_without_enabled_the_channel_is_off():
    settings = load()
    assert settings.enabled is None and not settings.active


def test_a_token_from_the_environment_turns_the_channel_on():
    settings = load(token=SECRET)
    assert settings.active and settings.token.get_secret_value() == SECRET


def test_enabled_false_wins_over_a_token():
    assert not load(token=SECRET, enabled="false").active


def test_enabled_without_a_token_is_a_config_error_naming_the_token():
    with pytest.raises(ConfigError) as caught:
        load(enabled="true")
    assert str(caught.value).startswith("whatsapp.token: required when whatsapp is enabled")
    assert "\n" not in str(caught.value)


def test_enabled_without_a_token_for_meta_is_a_config_error_too():
    with pytest.raises(ConfigError, match=r"^whatsapp\.token: "):
        load(enabled="true", transport="meta", meta_phone_number_id="1065")


@pytest.mark.parametrize("url", ["http://127.0.0.1:8026", "http://localhost:8026/", "http://[::1]:8026"])
def test_enabled_without_a_token_is_fine_against_a_loopback_sink(url):
    settings = load(enabled="true", base_url=url)
    assert settings.active and settings.base_url == url.rstrip("/")


def test_the_token_value_never_appears_in_a_config_error():
    with pytest.raises(ConfigError) as caught:
        load(token=SECRET, transport="meta")
    assert SECRET not in str(caught.value)
    assert str(caught.value).startswith("whatsapp.meta_phone_number_id: required when transport is 'meta'")


def test_admin_phones_are_normalised_to_e164_and_deduplicated():
    settings = load(admin_phones='["+965 5000 0001", "0096550000001", "+14155550123"]')
    assert settings.admin_phones == ("+96550000001", "+14155550123")


@pytest.mark.parametrize("bad", ["50000001", "+1234567890", "admin"])
def test_an_admin_phone_not_in_e164_is_a_one_line_config_error(bad):
    with pytest.raises(ConfigError) as caught:
        load(admin_phones=f'["+96550000001", "{bad}"]')
    assert str(caught.value).startswith("whatsapp.admin_phones: ")
    assert bad in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("transport", "sms"),
        ("base_url", "api.resayil.io"),
        ("timeout_s", "0"),
        ("meta_api_version", "24"),
        ("meta_phone_number_id", "+96550000000"),
        ("meta_template", "Resayil Notification"),
        ("meta_template_language", "arabic"),
    ],
)
def test_bad_values_are_config_errors_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"^whatsapp\.{key}: "):
        load(**{key: value})


def test_unknown_key_is_refused_by_the_core():
    with pytest.raises(ConfigError, match=r"whatsapp\.colour: unknown key"):
        load(colour="green")


def test_endpoint_base_follows_the_transport():
    assert load().endpoint_base == "https://api.resayil.io"
    meta = load(token=SECRET, transport="meta", meta_phone_number_id="1065")
    assert meta.endpoint_base == "https://graph.facebook.com"


def test_repr_of_the_settings_hides_the_token():
    assert SECRET not in repr(load(token=SECRET))


def test_loopback_detection():
    assert is_loopback_url("http://127.0.0.2:1") and is_loopback_url("http://localhost")
    assert not is_loopback_url("https://api.resayil.io") and not is_loopback_url("http://10.0.0.1")


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [("+96550000000", "+96550000000"), (" +965 5000-0000 ", "+96550000000"), ("00447911123456", "+447911123456")],
)
def test_e164_accepts_international_numbers_with_separators(raw, normalised):
    assert e164(raw) == normalised


@pytest.mark.parametrize("raw", ["96550000000", "50000000", "+0123456789", "+96512", "+1234567890", "+965abc"])
def test_e164_refuses_numbers_without_plus_or_not_valid(raw):
    with pytest.raises(NotE164):
        e164(raw)
