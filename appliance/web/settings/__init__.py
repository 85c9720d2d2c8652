"""Device settings (county IT): identity and broker shown, run-time settings changed and audited."""

from __future__ import annotations

import json
import re

from flask import Blueprint, abort, flash, g, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import ValidationError

from ...errors import ControlError
from ...settings import LOCAL, SETTINGS, merge_settings
from ..guards import county_it_required
from ..hall import Hall, hall

bp = Blueprint("settings", __name__, url_prefix="/settings", template_folder="templates")

# Longer than any allowed value; what is longer is refused before it is parsed.
VALUE_MAX = 12
AUDIT_ROWS = 200


class SettingForm(FlaskForm):
    value = StringField(_l("New value"))

    def __init__(self, name: str, **kwargs) -> None:
        # The setting's name as prefix: every form on the page has its own field names and ids.
        super().__init__(prefix=name, **kwargs)
        self.name = name
        self.number: int | None = None

    def validate_value(self, field) -> None:
        # The wording of check-config: where, what was found, what is wrong, how to fix it.
        lo, hi, _default = SETTINGS[self.name]
        raw = (field.data or "").strip()
        fix = _("give a whole number from %(low)d to %(high)d", low=lo, high=hi)
        if not raw:
            problem, shown = _("is required"), _("(missing)")
        elif len(raw) > VALUE_MAX:
            problem, shown = _("is too long (at most %(max)d characters)", max=VALUE_MAX), repr(raw[:VALUE_MAX] + "…")
        elif not re.fullmatch(r"-?[0-9]+", raw):
            problem, shown = _("must be a whole number"), repr(raw)
        elif not lo <= int(raw) <= hi:
            problem, shown = _("must be between %(low)d and %(high)d", low=lo, high=hi), raw
        else:
            self.number = int(raw)
            return
        raise ValidationError(_("%(field)s = %(value)s: %(problem)s. Fix: %(fix)s", field=self.name, value=shown, problem=problem, fix=fix))


def effective(h: Hall) -> tuple[dict, dict]:
    """The settings the daemon uses (or will use when it starts) and where each came from."""
    applied = h.store.applied_state("settings")
    return merge_settings({scope: data for scope, (_version, data) in applied.items()}, h.store.local_settings())


def _page(forms: dict | None = None, status: int = 200):
    h = hall()
    values, sources = effective(h)
    forms = forms or {}
    for name in SETTINGS:
        forms.setdefault(name, SettingForm(name, formdata=None))
    return render_template("settings/index.html", config=h.config, values=values, sources=sources, settings=SETTINGS, forms=forms), status


@bp.get("")
@county_it_required
def index():
    return _page()


@bp.post("/<name>")
@county_it_required
def change(name: str):
    if name not in SETTINGS:
        abort(404)
    form = SettingForm(name)
    if not form.validate_on_submit():
        return _page({name: form}, 422)
    h = hall()
    before, _sources = effective(h)
    now = h.clock.now().isoformat(timespec="seconds")
    with h.store.transaction() as conn:
        conn.execute(
            "INSERT INTO settings (key, value, changed_at, changed_by) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value, changed_at = excluded.changed_at, changed_by = excluded.changed_by",
            (name, json.dumps(form.number), now, g.user.username),
        )
        h.accounts.audit(g.user.username, "settings.changed", {"setting": name, "from": before[name], "to": form.number}, conn=conn)
    _tell_daemon(_("%(name)s is now %(value)d.", name=name, value=form.number))
    return redirect(url_for("settings.index"))


@bp.post("/<name>/clear")
@county_it_required
def clear(name: str):
    if name not in SETTINGS:
        abort(404)
    form = FlaskForm()
    if not form.validate_on_submit():
        abort(400)
    h = hall()
    before, sources = effective(h)
    if sources[name] != LOCAL:
        flash(_("%(name)s was not changed on this page; nothing to undo.", name=name), "info")
        return redirect(url_for("settings.index"))
    applied = {scope: data for scope, (_version, data) in h.store.applied_state("settings").items()}
    after, _sources = merge_settings(applied, {k: v for k, v in h.store.local_settings().items() if k != name})
    with h.store.transaction() as conn:
        conn.execute("DELETE FROM settings WHERE key = ?", (name,))
        h.accounts.audit(g.user.username, "settings.cleared", {"setting": name, "from": before[name], "to": after[name]}, conn=conn)
    _tell_daemon(_("%(name)s follows the county again: %(value)d.", name=name, value=after[name]))
    return redirect(url_for("settings.index"))


def _tell_daemon(saved: str) -> None:
    try:
        hall().daemon("reload")
    except ControlError as exc:
        flash(_("%(saved)s The daemon is not running (%(reason)s); the change applies when it starts.", saved=saved, reason=str(exc)), "warning")
        return
    flash(_("%(saved)s The daemon uses it now.", saved=saved), "info")


@bp.get("/audit")
@county_it_required
def audit():
    return render_template("settings/audit.html", entries=hall().accounts.audit_log(AUDIT_ROWS))
