"""The page's catalogs: every message translated into Simplified Chinese, and the .mo is the .po compiled."""

from __future__ import annotations

import io

from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po

from conftest import REPO

WEB = REPO / "appliance" / "web"
CATALOG = WEB / "translations" / "zh_Hans" / "LC_MESSAGES"
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "_l": None, "lazy_gettext": None}
METHODS = [("**/templates/**.html", "jinja2"), ("**.py", "python")]


def catalog():
    with open(CATALOG / "messages.po", "rb") as f:
        return read_po(f, locale="zh_Hans")


def _translated(message) -> bool:
    strings = message.string if isinstance(message.string, tuple) else (message.string,)
    return all(strings)


def _messages(cat) -> dict:
    """Every translation in a catalog, without its header (it names the Babel that wrote it)."""
    flat = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v  # noqa: E731 - plural forms
    return {flat(m.id): flat(m.string) for m in cat if m.id and not m.fuzzy}


def test_the_committed_mo_is_the_po_compiled():
    compiled = io.BytesIO()
    write_mo(compiled, catalog())
    compiled.seek(0)
    with open(CATALOG / "messages.mo", "rb") as f:
        committed = _messages(read_mo(f))
    assert committed == _messages(read_mo(compiled)), "run `make translations` and commit the .mo"
    assert len(committed) > 600


def test_every_message_on_the_page_is_translated():
    cat = catalog()
    used = {msgid for _file, _line, msgid, _comments, _context in extract_from_dir(str(WEB), METHODS, keywords=KEYWORDS)}
    untranslated = sorted(str(m) for m in used if (entry := cat.get(m)) is None or not _translated(entry))
    assert untranslated == [], "add these to messages.po (make translations)"
    fuzzy = [m.id for m in cat if m.id and m.fuzzy]
    assert fuzzy == []
    unused = sorted(str(m.id) for m in cat if m.id and m.id not in used)
    assert unused == [], "remove these from messages.po"


def test_translations_keep_every_placeholder():
    problems = [(m.id, [str(e) for e in errors]) for m, errors in catalog().check()]
    assert problems == []
