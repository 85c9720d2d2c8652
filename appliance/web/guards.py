"""Who may see what: signed in for every page, named roles for some, county IT for the device settings."""

from __future__ import annotations

from functools import wraps
from typing import Callable

from flask import g, redirect, request, session, url_for
from flask_babel import gettext as _

from ..accounts import COUNTY_IT
from .error_pages import error_page
from .labels import ROLE_NAMES


def end_session() -> None:
    """Forget who is signed in, keeping the language the browser chose."""
    language = session.get("lang")
    session.clear()
    if language:
        session["lang"] = language


def login_required(view: Callable) -> Callable:
    """Only for a signed-in account; a browser is sent to the sign-in page and brought back."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        if g.get("user") is None:
            if request.method in ("GET", "HEAD"):
                return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
            return error_page(401, _("Sign in first; nothing was saved."))
        return view(*args, **kwargs)

    return wrapped


def county_it_required(view: Callable) -> Callable:
    """Only for county IT (the device settings)."""

    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if g.user.role != COUNTY_IT:
            return error_page(403, _("This page is for county IT; you are signed in as the hall director."))
        return view(*args, **kwargs)

    return wrapped


def roles_required(*roles: str) -> Callable[[Callable], Callable]:
    """Only for accounts of one of ``roles`` (the roster: the hall director and county IT)."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if g.user.role not in roles:
                names = " / ".join(str(ROLE_NAMES.get(r, r)) for r in roles)
                return error_page(403, _("This page is for: %(roles)s.", roles=names))
            return view(*args, **kwargs)

        return wrapped

    return decorate
