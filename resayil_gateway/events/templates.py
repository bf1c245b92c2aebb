"""Message templates: one file per event and language (``templates/{event}.{ar,en}.txt``), ``${name}``
placeholders (``string.Template``), overridable file by file from ``notifications.templates_dir``.

A message is the Arabic text, a blank line, then the English text. A placeholder the event does not provide is
an error, never a silent blank: :func:`template_problems` finds every such mistake (a test runs it), and
:meth:`Templates.render` raises :class:`TemplateError` rather than send a broken text.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from string import Template
from typing import Any

from .catalog import LANGUAGES, NOTIFICATIONS

PACKAGED = Path(__file__).with_name("templates")


class TemplateError(Exception):
    """A template is missing, unreadable, malformed or uses a placeholder its event does not provide."""


class Templates:
    """The templates in use: a file in ``override_dir`` wins over the packaged one of the same name."""

    def __init__(self, override_dir: str | Path = "") -> None:
        self.override_dir = Path(override_dir).expanduser() if override_dir else None

    def path(self, event: str, language: str) -> Path:
        """The file that holds ``event``'s text in ``language``."""
        name = f"{event}.{language}.txt"
        if self.override_dir is not None and (self.override_dir / name).is_file():
            return self.override_dir / name
        return PACKAGED / name

    def source(self, event: str, language: str) -> Template:
        """The template of ``event`` in ``language``; :class:`TemplateError` when there is none."""
        path = self.path(event, language)
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError:
            raise TemplateError(f"no {language} template for {event} ({path})") from None
        if not text:
            raise TemplateError(f"the {language} template for {event} is empty ({path})")
        return Template(text)

    def render(self, event: str, data: Mapping[str, Any]) -> str:
        """Arabic, a blank line, English: ``event``'s templates filled from ``data``."""
        parts = []
        for language in LANGUAGES:
            template = self.source(event, language)
            try:
                parts.append(template.substitute(localized(data, language)))
            except (KeyError, ValueError) as exc:
                raise TemplateError(f"the {language} template for {event} cannot be filled: {exc!r}") from None
        return "\n\n".join(parts)


def localized(data: Mapping[str, Any], language: str) -> dict[str, str]:
    """``data`` as text for one language: a value given per language (``{"ar": …, "en": …}``) is picked."""
    values: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and language in value:
            value = value[language]
        values[key] = str(value)
    return values


def template_problems(templates: Templates) -> list[str]:
    """Every missing language, malformed template or unknown placeholder, one line each (empty: all good)."""
    problems: list[str] = []
    for event, notification in NOTIFICATIONS.items():
        for language in LANGUAGES:
            try:
                template = templates.source(event, language)
            except TemplateError as exc:
                problems.append(str(exc))
                continue
            if not template.is_valid():
                problems.append(f"the {language} template for {event} has a malformed placeholder")
                continue
            unknown = set(template.get_identifiers()) - notification.placeholders
            if unknown:
                names = ", ".join(sorted(unknown))
                problems.append(f"the {language} template for {event} uses {names}, which the event does not provide")
    return problems
