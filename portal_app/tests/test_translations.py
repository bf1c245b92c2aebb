"""Arabic and English are complete: every key in both, every key used in a template or in code defined
(lesson 13 of the original: raw translation keys on screen)."""

from __future__ import annotations

import re
from importlib import resources

from resayil_portal.i18n import DYNAMIC_KEYS, LANGUAGES, Translator, catalog

PACKAGE = resources.files("resayil_portal")
TEMPLATE_KEY = re.compile(r"""\bt\(\s*'([a-z0-9_.]+)'""")
DYNAMIC_USE = re.compile(r"""\bt\(\s*'([a-z0-9_.]+_)'\s*~""")
CODE_KEY = re.compile(r'''"((?:admin|dash|error|keys|landing|login|register|usage|pay)\.[a-z0-9_]+)"''')


def _templates() -> dict[str, str]:
    found = {}
    folder = PACKAGE.joinpath("templates")
    for entry in folder.iterdir():
        if entry.name.endswith(".html"):
            found[entry.name] = entry.read_text("utf-8")
        elif entry.is_dir():
            for inner in entry.iterdir():
                found[f"{entry.name}/{inner.name}"] = inner.read_text("utf-8")
    return found


def _code() -> str:
    return "\n".join(entry.read_text("utf-8") for entry in PACKAGE.iterdir() if entry.name.endswith(".py"))


def test_both_languages_have_exactly_the_same_keys():
    english, arabic = set(catalog("en")), set(catalog("ar"))
    assert english - arabic == set(), "missing in Arabic"
    assert arabic - english == set(), "missing in English"


def test_no_message_is_empty_and_placeholders_match():
    for key, text in catalog("en").items():
        other = catalog("ar")[key]
        assert text.strip() and other.strip(), key
        assert set(re.findall(r"{(\w+)}", text)) == set(re.findall(r"{(\w+)}", other)), key


def test_every_key_used_in_a_template_exists():
    used = {key for text in _templates().values() for key in TEMPLATE_KEY.findall(text)}
    dynamic_prefixes = {prefix for text in _templates().values() for prefix in DYNAMIC_USE.findall(text)}
    used -= dynamic_prefixes
    assert used, "the pattern found no keys: the test would prove nothing"
    for language in LANGUAGES:
        assert used - set(catalog(language)) == set(), language


def test_every_dynamic_key_family_is_complete_and_declared():
    dynamic_prefixes = {prefix for text in _templates().values() for prefix in DYNAMIC_USE.findall(text)}
    assert dynamic_prefixes <= set(DYNAMIC_KEYS), "a template builds keys from a prefix DYNAMIC_KEYS does not list"
    for prefix, values in DYNAMIC_KEYS.items():
        for language in LANGUAGES:
            missing = [prefix + value for value in values if prefix + value not in catalog(language)]
            assert missing == [], language


def test_every_key_named_in_code_exists():
    # Template names ("login.html") and the prefixes of DYNAMIC_KEYS look like keys but are not.
    used = {key for key in CODE_KEY.findall(_code()) if not key.endswith((".html", "_", "."))}
    assert used
    for language in LANGUAGES:
        assert used - set(catalog(language)) == set(), language


def test_a_missing_key_would_show_as_itself_which_the_tests_above_forbid():
    assert Translator("en")("no.such_key") == "no.such_key"
    assert Translator("ar")("keys.limit", used=1, limit=3) == "1 من 3 مستخدمة"
