"""Error pages: the right status code and one clear sentence, as HTML or (under /api/) JSON."""

from __future__ import annotations

import math

from flask import Response, jsonify, make_response, render_template, request
from flask_babel import lazy_gettext as _l

TITLES = {
    400: _l("The request was not understood"),
    401: _l("Sign-in needed"),
    403: _l("Not allowed"),
    404: _l("No such page"),
    405: _l("Not allowed this way"),
    413: _l("Too large"),
    422: _l("Check the form"),
    429: _l("Too many attempts"),
    500: _l("Something went wrong"),
    503: _l("Not available right now"),
}

MESSAGES = {
    400: _l("The appliance could not understand what the browser sent. Go back, reload the page and try again."),
    401: _l("Sign in to see this page."),
    403: _l("Your account may not see this page."),
    404: _l("There is no page at this address."),
    405: _l("This address does not accept that kind of request."),
    413: _l("What was sent is larger than the appliance accepts. Nothing was saved."),
    500: _l("The appliance could not finish this request; the reason is in its log. Nothing was half-saved: try again."),
    503: _l("The appliance cannot do this right now. Try again in a moment."),
}


def error_page(code: int, message: str | None = None, *, retry_after: float | None = None) -> Response:
    """A page (or JSON under /api/) saying what went wrong, with status ``code``."""
    text = str(message or MESSAGES.get(code, MESSAGES[400]))
    if request.path.startswith("/api/"):
        response = jsonify(error=text, status=code)
        response.status_code = code
    else:
        response = make_response(render_template("errors.html", code=code, title=TITLES.get(code, TITLES[400]), message=text), code)
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response
