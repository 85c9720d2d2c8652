"""The complaint box's pages (举报箱): the public form and receipt lookup, the staff form, the hall's view, the wall notice.

``/ts`` (投诉, short enough to type from the wall notice) and ``/ts/receipt`` are public: no
sign-in, no cookie beyond the form's CSRF token, and nothing about the citizen kept — not
their address, not their browser. The text is sealed by ``services.complaints`` on arrival
to the county supervisor's key; the page never stores or logs it. Flood control counts in
memory under a keyed hash of the client address (``box.py``).

``/complaints`` (the counts and receipts, never contents), ``/complaints/transcribe`` (paper
box and phone complaints typed in by staff, audited) and ``/complaints/notice`` (the A4 notice
with the form's address and QR codes) are for signed-in accounts. See docs/complaints.md.
"""

from __future__ import annotations

import math
import unicodedata

from flask import Blueprint, Flask, current_app, g, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError
from wtforms import SelectField, StringField, TextAreaField
from wtforms.validators import ValidationError

from services.complaints import (
    CATEGORIES,
    CATEGORY_BY_CODE,
    CONTACT_MAX,
    RECEIPT_ALPHABET,
    RECEIPT_LENGTH,
    STAFF_MAX,
    TEXT_MAX,
    ComplaintRejected,
    RateLimited,
    UnknownReceipt,
    lookup_receipt,
    normalize_receipt,
)

from ...accounts import COUNTY_IT, DIRECTOR
from ..guards import login_required, roles_required
from ..hall import hall
from ..labels import COMPLAINT_CATEGORIES, COMPLAINT_CHANNELS, COMPLAINT_HINTS, COMPLAINT_SOURCES, COMPLAINT_STATUSES
from .box import SOURCE_NOTES, ComplaintBox, TranscriptionSink, lookup_address, qr_data_uri, wifi_payload

bp = Blueprint("complaints", __name__, template_folder="templates")

# The hall director and county IT type in paper-box and phone complaints.
TRANSCRIBE_ROLES = (DIRECTOR, COUNTY_IT)
RECEIPTS_SHOWN = 100
EXAMPLE_RECEIPT = "7KQM-X3PD-9HTR"
# How a receipt code may be typed between its characters (as normalize_receipt allows).
RECEIPT_SEPARATORS = " -_.·—–"


def init_app(app: Flask) -> None:
    """Open the complaint box for ``app``: read the supervisor's key once, start the limiters."""
    h = app.extensions["hall"]
    app.extensions["complaint_box"] = ComplaintBox(
        h.config.complaints,
        {w.id: w.name for w in h.config.windows},
        lambda: h.clock.monotonic_ns() / 1e9,
    )
    app.register_blueprint(bp)


def box() -> ComplaintBox:
    """The complaint box of the app handling this request."""
    return current_app.extensions["complaint_box"]


def _strip(value):
    return value.strip() if isinstance(value, str) else value


def _controls(value: str, allowed: str = "") -> bool:
    # As the service checks: control characters (category Cc) other than those allowed.
    return any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in value)


def _body(raw: str | None) -> str:
    # As the service counts the text: line breaks as one character each, ends trimmed.
    return (raw or "").replace("\r\n", "\n").replace("\r", "\n").strip()


def _one_line_problem(value: str | None, limit: int) -> int | None:
    """The length of ``value`` when it is over ``limit``; ValidationError when it is not one line."""
    value = value or ""
    if len(value) > limit:
        return len(value)
    if _controls(value):
        raise ValidationError(_("Keep this to one line, without line breaks or tabs."))
    return None


# -- forms ------------------------------------------------------------------------------------


class ComplaintForm(FlaskForm):
    """A complaint: what it is about, the window and staff member (optional), what happened, a contact (optional)."""

    category = SelectField(_l("What is it about?"), validate_choice=False)
    window = SelectField(_l("Which window (optional)"), validate_choice=False)
    staff = StringField(_l("Staff member, if you know (optional)"), filters=[_strip])
    text = TextAreaField(_l("What happened"))
    contact = StringField(_l("How to reach you (optional)"), filters=[_strip])

    def __init__(self, windows: dict[str, str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.windows = windows
        self.category.choices = [("", _("— choose —"))] + [
            (c.code, f"{COMPLAINT_CATEGORIES.get(c.code, c.label)} ({COMPLAINT_HINTS.get(c.code, c.hint)})") for c in CATEGORIES
        ]
        self.window.choices = [("", _("— no particular window —"))] + [(wid, name) for wid, name in windows.items()]

    @property
    def text_max(self) -> int:
        """How many characters the text may have."""
        return TEXT_MAX

    def validate_category(self, field) -> None:
        if not field.data:
            raise ValidationError(_("Choose what the complaint is about from the list."))
        if field.data not in CATEGORY_BY_CODE:
            raise ValidationError(_("“%(value)s” is not one of the categories: choose one from the list.", value=field.data[:40]))

    def validate_window(self, field) -> None:
        if field.data and field.data not in self.windows:
            raise ValidationError(_("“%(value)s” is not a window of this hall: choose one from the list, or leave it empty.", value=field.data[:40]))

    def validate_staff(self, field) -> None:
        count = _one_line_problem(field.data, STAFF_MAX)
        if count is not None:
            raise ValidationError(_("The staff member is %(count)d characters long; use at most %(max)d (a name or staff number), or leave it empty.", count=count, max=STAFF_MAX))

    def validate_text(self, field) -> None:
        body = _body(field.data)
        if not body:
            raise ValidationError(_("Write what happened: this field is empty."))
        if len(body) > self.text_max:
            raise ValidationError(
                _("What happened is %(count)d characters long; at most %(max)d fit. Shorten it, or send the rest as a second complaint.", count=len(body), max=self.text_max)
            )
        if _controls(body, "\n\t"):
            raise ValidationError(_("What happened contains control characters: type or paste plain text."))

    def validate_contact(self, field) -> None:
        count = _one_line_problem(field.data, CONTACT_MAX)
        if count is not None:
            raise ValidationError(
                _("The contact is %(count)d characters long; use at most %(max)d (a phone number or an address), or leave it empty to stay anonymous.", count=count, max=CONTACT_MAX)
            )

    def rejected(self, exc: ComplaintRejected) -> None:
        """The service's refusal beside each field it names (the form checks the same rules first)."""
        for name, reason in exc.problems:
            target = getattr(self, name, None)
            message = _("Not accepted: %(reason)s", reason=reason)
            if target is not None and name in self._fields:
                target.errors = [*target.errors, message]
            else:
                self.form_errors.append(message)


class TranscribeForm(ComplaintForm):
    """A complaint from the paper box or the telephone, typed in by staff: the same fields and where it came from."""

    source = SelectField(_l("Where it came from"), validate_choice=False)

    def __init__(self, windows: dict[str, str], **kwargs) -> None:
        super().__init__(windows, **kwargs)
        self.source.choices = [("", _("— choose —"))] + [(k, str(v)) for k, v in COMPLAINT_SOURCES.items()]

    @property
    def text_max(self) -> int:
        # The source note goes in front of the sealed text, within the service's limit.
        return TEXT_MAX - max(len(note) for note in SOURCE_NOTES.values()) - 1

    def validate_source(self, field) -> None:
        if field.data not in SOURCE_NOTES:
            raise ValidationError(_("Choose where the complaint came from: the paper box or the telephone."))

    def sealed_text(self) -> str:
        """The text as it is sealed: the source note, then what the citizen said."""
        return f"{SOURCE_NOTES[self.source.data]}\n{_body(self.text.data)}"


class LookupForm(FlaskForm):
    """A receipt code, typed any way (lower case, spaces, without dashes)."""

    code = StringField(_l("Receipt code"), filters=[_strip])


# -- the public form -----------------------------------------------------------------------------


@bp.context_processor
def _names() -> dict:
    return {
        "complaint_categories": COMPLAINT_CATEGORIES,
        "complaint_statuses": COMPLAINT_STATUSES,
        "complaint_channels": COMPLAINT_CHANNELS,
        "complaint_sources": COMPLAINT_SOURCES,
    }


def _client_key() -> str:
    # The address goes into the keyed hash and nowhere else (no log, no store, no session).
    return box().client_key(request.remote_addr or "")


def _minutes(seconds: float) -> int:
    return max(1, math.ceil(seconds / 60))


def _form_page(form: ComplaintForm, status: int = 200, *, limited: str | None = None, retry_after: float | None = None):
    response = current_app.make_response((render_template("complaints/form.html", form=form, limited=limited, text_max=form.text_max), status))
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def _closed_page(status: int = 200):
    return render_template("complaints/closed.html"), status


def _flood_message(exc: RateLimited, limiter) -> str:
    minutes = _minutes(exc.retry_after_s)
    if limiter.saturated:
        return ngettext(
            "The complaint box has taken a great many complaints in the last minute, so it is not taking more right now. Nothing was sent: try again in %(num)d minute.",
            "The complaint box has taken a great many complaints in the last minute, so it is not taking more right now. Nothing was sent: try again in %(num)d minutes.",
            minutes,
        )
    return ngettext(
        "%(count)d complaints were already sent from this phone or computer in the last hour. Nothing was sent: try again in %(num)d minute, or hand in a written complaint at the hall.",
        "%(count)d complaints were already sent from this phone or computer in the last hour. Nothing was sent: try again in %(num)d minutes, or hand in a written complaint at the hall.",
        minutes,
        count=limiter.per_client,
    )


@bp.route("/ts", methods=["GET", "POST"])
def form():
    b = box()
    if not b.open:
        # Politely, and without taking anything: there is no key to seal it with.
        return _closed_page(503 if request.method == "POST" else 200)
    form = ComplaintForm(b.windows)
    if request.method == "GET":
        return _form_page(form)
    if not form.validate_on_submit():
        return _form_page(form, 422)
    key = _client_key()
    # One submission at a time (the server has several threads): checking the limits,
    # recording and counting together, so simultaneous posts from one phone cannot all pass.
    with b.submitting:
        try:
            b.submissions.check(key)
        except RateLimited as exc:
            return _form_page(form, 429, limited=_flood_message(exc, b.submissions), retry_after=exc.retry_after_s)
        try:
            receipt = b.service(hall()).submit(
                form.category.data, form.text.data, contact=form.contact.data or "", window=form.window.data or None, staff=form.staff.data or None
            )
        except ComplaintRejected as exc:
            if exc.code == "closed":
                return _closed_page(503)
            form.rejected(exc)
            return _form_page(form, 422)
        b.submissions.count(key)
    return render_template("complaints/receipt.html", receipt=receipt, transcribed=False)


@bp.errorhandler(CSRFError)
def _expired_form(exc: CSRFError):
    """A public form whose token expired comes back as typed, with a fresh token: nothing the citizen wrote is lost."""
    if request.endpoint == "complaints.form" and box().open:
        form = ComplaintForm(box().windows)
        form.form_errors.append(_("This form had expired, so nothing was sent. Check what you wrote below and press “Send” again."))
        return _form_page(form, 400)
    if request.endpoint == "complaints.lookup":
        form = LookupForm()
        form.form_errors.append(_("This form had expired. Press “Look up” again."))
        return render_template("complaints/lookup.html", form=form, status=None), 400
    from .. import _csrf_error

    return _csrf_error(exc)


# -- the receipt lookup ----------------------------------------------------------------------------


def _receipt_problem(typed: str, exc: ComplaintRejected) -> str:
    """Why ``typed`` is not a receipt code, for the citizen (the service's codes, worded here)."""
    if exc.code == "empty":
        return _("Type the 12-character code from your receipt, like %(example)s.", example=EXAMPLE_RECEIPT)
    if exc.code == "typo":
        return _("This code has a mistake in it: a character is probably misread or two are swapped. Compare it with your receipt.")
    chars = [ch for ch in unicodedata.normalize("NFKC", typed).upper() if ch not in RECEIPT_SEPARATORS and not ch.isspace()]
    if any(ch in "0O1ILU" for ch in chars):
        return _("Receipt codes never use 0, O, 1, I, L or U: compare the code with your receipt again.")
    if any(ch not in RECEIPT_ALPHABET for ch in chars):
        return _("A receipt code has only the digits 2 to 9 and capital letters, like %(example)s.", example=EXAMPLE_RECEIPT)
    return ngettext(
        "You typed %(num)d character; a receipt code has %(length)d, like %(example)s.",
        "You typed %(num)d characters; a receipt code has %(length)d, like %(example)s.",
        len(chars),
        length=RECEIPT_LENGTH,
        example=EXAMPLE_RECEIPT,
    )


@bp.route("/ts/receipt", methods=["GET", "POST"])
def lookup():
    form = LookupForm()
    if request.method == "GET":
        return render_template("complaints/lookup.html", form=form, status=None)
    if not form.validate_on_submit():
        return render_template("complaints/lookup.html", form=form, status=None), 422
    typed = form.code.data or ""
    try:
        code = normalize_receipt(typed)
    except ComplaintRejected as exc:
        form.code.errors = [_receipt_problem(typed, exc)]
        return render_template("complaints/lookup.html", form=form, status=None), 422
    limiter, key = box().lookups, _client_key()
    try:
        limiter.check(key)
    except RateLimited as exc:
        minutes = _minutes(exc.retry_after_s)
        form.code.errors = [
            ngettext(
                "Too many codes that name no complaint were looked up from here. Try again in %(num)d minute, or ask at the hall.",
                "Too many codes that name no complaint were looked up from here. Try again in %(num)d minutes, or ask at the hall.",
                minutes,
            )
        ]
        response = current_app.make_response((render_template("complaints/lookup.html", form=form, status=None), 429))
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        return response
    try:
        status = lookup_receipt(hall().store, code)
    except UnknownReceipt:
        # Only misses count: a citizen checking their own code again is never held back.
        limiter.count(key)
        form.code.errors = [_("No complaint has the code %(code)s at this hall. Check it against your receipt; a complaint made at another hall is looked up there.", code=code)]
        return render_template("complaints/lookup.html", form=form, status=None), 404
    form.code.data = code
    return render_template("complaints/lookup.html", form=form, status=status)


# -- for the hall (signed in) ------------------------------------------------------------------------


@bp.get("/complaints")
@login_required
def index():
    b = box()
    service = b.service(hall())
    return render_template(
        "complaints/index.html",
        counts=service.counts(),
        receipts=service.receipts(RECEIPTS_SHOWN),
        shown=RECEIPTS_SHOWN,
        box=b,
        categories=CATEGORIES,
    )


@bp.route("/complaints/transcribe", methods=["GET", "POST"])
@roles_required(*TRANSCRIBE_ROLES)
def transcribe():
    b = box()
    h = hall()
    form = TranscribeForm(b.windows)
    if request.method == "GET" or not b.open:
        return render_template("complaints/transcribe.html", form=form, box=b), (503 if request.method == "POST" else 200)
    if not form.validate_on_submit():
        return render_template("complaints/transcribe.html", form=form, box=b), 422
    sink = TranscriptionSink(h.recorder, h.accounts, g.user.username, form.source.data)
    try:
        receipt = b.service(h, sink).submit(
            form.category.data,
            form.sealed_text(),
            contact=form.contact.data or "",
            window=form.window.data or None,
            staff=form.staff.data or None,
            transcribed_by=g.user.username,
        )
    except ComplaintRejected as exc:
        form.rejected(exc)
        return render_template("complaints/transcribe.html", form=form, box=b), 422
    return render_template("complaints/receipt.html", receipt=receipt, transcribed=True, source=form.source.data)


@bp.get("/complaints/notice")
@login_required
def notice():
    cfg = box().config
    wifi = None
    if cfg.wifi_ssid:
        wifi = {"ssid": cfg.wifi_ssid, "password": cfg.wifi_password, "qr": qr_data_uri(wifi_payload(cfg.wifi_ssid, cfg.wifi_password))}
    return render_template(
        "complaints/notice.html",
        address=cfg.address,
        address_qr=qr_data_uri(cfg.address) if cfg.address else None,
        lookup=lookup_address(cfg.address),
        wifi=wifi,
        box=box(),
        config_file=str(hall().config.source or "/etc/hall-appliance/appliance.toml"),
    )
