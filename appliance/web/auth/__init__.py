"""Signing in and out, changing one's own password, choosing the page's language."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_wtf import FlaskForm
from itsdangerous import BadSignature, URLSafeTimedSerializer
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import AnyOf, EqualTo, InputRequired, Length, ValidationError

from ...accounts import PASSWORD_MAX, PASSWORD_MIN, USERNAME_MAX
from ..error_pages import error_page
from ..guards import end_session, login_required
from ..hall import hall
from ..labels import LANGUAGES

bp = Blueprint("auth", __name__, template_folder="templates")

# A browser that signed in to an account before carries this cookie; its failed attempts
# count against that browser alone (see SignInDelays), so nobody can delay the director's own.
DEVICE_COOKIE = "hall_device"
DEVICE_COOKIE_DAYS = 180
NEXT_MAX = 512


def _strip(value):
    return value.strip() if isinstance(value, str) else value


def _lower(value):
    return value.lower() if isinstance(value, str) else value


class SignInForm(FlaskForm):
    username = StringField(
        _l("User name"),
        filters=[_strip, _lower],
        validators=[InputRequired(_l("Enter your user name.")), Length(max=USERNAME_MAX, message=_l("Use at most %(max)d characters."))],
    )
    password = PasswordField(
        _l("Password"),
        validators=[InputRequired(_l("Enter your password.")), Length(max=PASSWORD_MAX, message=_l("Use at most %(max)d characters."))],
    )
    next = HiddenField(validators=[Length(max=NEXT_MAX)])


class PasswordForm(FlaskForm):
    current = PasswordField(
        _l("Current password"),
        validators=[InputRequired(_l("Enter your current password.")), Length(max=PASSWORD_MAX, message=_l("Use at most %(max)d characters."))],
    )
    new = PasswordField(
        _l("New password"),
        validators=[
            InputRequired(_l("Enter a new password.")),
            Length(min=PASSWORD_MIN, max=PASSWORD_MAX, message=_l("Use %(min)d to %(max)d characters.")),
        ],
    )
    repeat = PasswordField(
        _l("New password again"),
        validators=[InputRequired(_l("Enter the new password again.")), EqualTo("new", _l("The two new passwords differ."))],
    )

    def validate_new(self, field) -> None:
        if field.data and field.data.lower() == g.user.username.lower():
            raise ValidationError(_l("The password must not be the user name."))
        if field.data and field.data == self.current.data:
            raise ValidationError(_l("Choose a password different from the current one."))


class LanguageForm(FlaskForm):
    lang = HiddenField(validators=[AnyOf(list(LANGUAGES), _l("Choose one of the languages offered."))])
    next = HiddenField(validators=[Length(max=NEXT_MAX)])


def safe_next(target: str | None) -> str | None:
    """``target`` if it is a path on this page (never another site), else None."""
    if not target or len(target) > NEXT_MAX or "\\" in target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


def _device_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt="hall-device")


def device_of(username: str) -> str | None:
    """This browser's device id for ``username``, if it signed in to that account before."""
    raw = request.cookies.get(DEVICE_COOKIE)
    if not raw:
        return None
    try:
        data = _device_serializer().loads(raw, max_age=DEVICE_COOKIE_DAYS * 86400)
    except BadSignature:
        return None
    if isinstance(data, dict) and data.get("u") == username and isinstance(data.get("d"), str):
        return data["d"]
    return None


def too_many(wait_s: float):
    """429: the attempt was not even checked; say when to try again."""
    seconds = max(1, int(wait_s + 0.999))
    return error_page(
        429,
        ngettext(
            "Too many failed sign-ins. Wait %(num)d second, then try again.",
            "Too many failed sign-ins. Wait %(num)d seconds, then try again.",
            seconds,
        ),
        retry_after=seconds,
    )


def source_address() -> str:
    return request.remote_addr or "unknown"


@bp.route("/login", methods=["GET", "POST"])
def login():
    h = hall()
    form = SignInForm()
    if request.method == "GET":
        if g.user is not None:
            return redirect(url_for("status.index"))
        form.next.data = safe_next(request.args.get("next")) or ""
        return _login_page(form)
    if not form.validate_on_submit():
        return _login_page(form), 422
    username, source = form.username.data, source_address()
    device = device_of(username)
    keys = h.delays.keys(username, source, device)
    wait = h.delays.wait(keys)
    if wait > 0:
        return too_many(wait)
    account = h.accounts.verify(username, form.password.data)
    if account is None:
        wait = h.delays.failed(keys)
        h.accounts.audit(username, "signin.failed", {"source": source, "known_device": device is not None})
        message = _("Wrong user name or password.")
        if wait > 0:
            seconds = max(1, int(wait + 0.999))
            message = ngettext(
                "Wrong user name or password. Wait %(num)d second before the next try.",
                "Wrong user name or password. Wait %(num)d seconds before the next try.",
                seconds,
            )
        # 401 without a Basic challenge: a browser would put its own dialog over the form.
        return _login_page(form, message), 401
    h.delays.succeeded(keys)
    end_session()
    session.permanent = True
    session["user"] = account.username
    session["pw"] = account.stamp
    session["at"] = h.clock.now().timestamp()
    if account.language:
        session["lang"] = account.language
    h.accounts.audit(account.username, "signin", {"source": source})
    response = redirect(safe_next(form.next.data) or url_for("status.index"))
    response.set_cookie(
        DEVICE_COOKIE,
        _device_serializer().dumps({"u": account.username, "d": device or secrets.token_urlsafe(16)}),
        max_age=DEVICE_COOKIE_DAYS * 86400,
        httponly=True,
        samesite="Strict",
        secure=h.tls,
    )
    return response


def _login_page(form: SignInForm, error: str | None = None) -> str:
    return render_template("auth/login.html", form=form, error=error, no_accounts=not hall().accounts.all())


@bp.post("/logout")
@login_required
def logout():
    hall().accounts.audit(g.user.username, "signout", {"source": source_address()})
    end_session()
    flash(_("You have signed out."), "info")
    return redirect(url_for("auth.login"))


@bp.route("/password", methods=["GET", "POST"])
@login_required
def password():
    h = hall()
    form = PasswordForm()
    if request.method == "GET":
        return render_template("auth/password.html", form=form)
    if not form.validate_on_submit():
        return render_template("auth/password.html", form=form), 422
    keys = h.delays.keys(g.user.username, source_address(), device_of(g.user.username))
    wait = h.delays.wait(keys)
    if wait > 0:
        return too_many(wait)
    if h.accounts.verify(g.user.username, form.current.data) is None:
        h.delays.failed(keys)
        h.accounts.audit(g.user.username, "signin.failed", {"source": source_address(), "during": "password change"})
        form.current.errors.append(_("This is not your current password."))
        return render_template("auth/password.html", form=form), 422
    h.delays.succeeded(keys)
    account = h.accounts.set_password(g.user.username, form.new.data, by=g.user.username)
    # This session goes on; every other session of the account ends (its stamp is stale).
    session["pw"] = account.stamp
    flash(_("Your password has been changed."), "info")
    return redirect(url_for("status.index"))


@bp.post("/language")
def language():
    form = LanguageForm()
    if not form.validate_on_submit():
        return error_page(400, _("Choose one of the languages offered."))
    chosen = form.lang.data
    session["lang"] = chosen
    if g.user is not None and g.user.language != chosen:
        hall().accounts.set_language(g.user.username, chosen, by=g.user.username)
    return redirect(safe_next(form.next.data) or url_for("status.index"))
