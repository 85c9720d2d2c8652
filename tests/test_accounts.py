"""Accounts, passwords, sign-in delays and run-time settings, without Flask or a daemon."""

from __future__ import annotations

import re

import pytest

from appliance.accounts import HASH_METHOD, AccountError, Accounts, SignInDelays, generate_password
from appliance.clock import FakeClock
from appliance.settings import merge_settings
from appliance.store import Store

FAST = "scrypt:1024:8:1"


@pytest.fixture
def accounts(tmp_path):
    store = Store(tmp_path / "hall.db", reserve_mb=0)
    yield Accounts(store, FakeClock(), hash_method=FAST)
    store.close()


def test_passwords_are_stored_as_scrypt_hashes_at_full_cost_by_default(tmp_path):
    store = Store(tmp_path / "hall.db", reserve_mb=0)
    try:
        accounts = Accounts(store, FakeClock())
        accounts.set_password("director", "a-long-password", by="test", role="director")
        (stored,) = store.rows("SELECT password_hash FROM users")[0]
        assert HASH_METHOD == "scrypt:32768:8:1" and stored.startswith("scrypt:32768:8:1$")
        assert "a-long-password" not in stored
        assert accounts.verify("director", "a-long-password").role == "director"
    finally:
        store.close()


def test_verify_says_nothing_about_which_part_was_wrong(accounts):
    accounts.set_password("director", "a-long-password", by="test", role="director")
    assert accounts.verify("director", "a-long-password") is not None
    assert accounts.verify("director", "a-long-passworD") is None
    assert accounts.verify("nobody", "a-long-password") is None
    assert accounts.verify("director", "x" * 10_000) is None


@pytest.mark.parametrize(
    ("username", "password", "role", "message"),
    [
        ("director", "short", "director", "the password has 5 characters; use at least 10"),
        ("director", "p" * 129, "director", "the password has 129 characters; use at most 128"),
        ("director", "DIRECTOR12", "director", None),
        ("director12", "Director12", "director", "the password must not be the user name"),
        ("Director", "a-long-password", "director", "user name 'Director' is not valid"),
        ("hall director", "a-long-password", "director", "user name 'hall director' is not valid"),
        ("director", "a-long-password", "admin", "role 'admin' is not a role; use director or county_it"),
        ("newcomer", "a-long-password", None, "there is no account 'newcomer': give its role (director or county_it) to create it"),
    ],
)
def test_bad_accounts_are_refused_with_the_reason(accounts, username, password, role, message):
    if message is None:
        accounts.set_password(username, password, by="test", role=role)
        return
    with pytest.raises(AccountError, match=re.escape(message)):
        accounts.set_password(username, password, by="test", role=role)
    assert accounts.all() == []
    assert accounts.audit_log() == []


def test_a_reset_is_audited_and_changes_the_stamp(accounts):
    first = accounts.set_password("director", "a-long-password", by="cli:root", role="director")
    second = accounts.set_password("director", "another-password", by="cli:root", must_change=True)
    assert first.stamp != second.stamp and second.must_change
    assert [(e.username, e.action, e.detail) for e in reversed(accounts.audit_log())] == [
        ("cli:root", "account.created", {"account": "director", "role": "director"}),
        ("cli:root", "password.reset", {"account": "director"}),
    ]
    assert accounts.audit_log()[0].at == "2026-11-25T09:00:00+08:00"


def test_create_if_missing_never_overwrites(accounts):
    password = accounts.create_if_missing("county-it", "county_it", by="simulator")
    assert re.fullmatch(r"[a-z2-9]{4}(-[a-z2-9]{4}){3}", password)
    assert accounts.verify("county-it", password).role == "county_it"
    assert accounts.create_if_missing("county-it", "county_it", by="simulator") is None
    assert accounts.verify("county-it", password) is not None


def test_generated_passwords_avoid_look_alikes():
    seen = {generate_password() for _ in range(200)}
    assert len(seen) == 200
    assert not set("".join(seen)) & set("01ilo")


class Ticker:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_delays_double_from_the_fourth_failure_up_to_the_cap():
    now = Ticker()
    delays = SignInDelays(now)
    keys = delays.keys("director", "10.0.0.5")
    waits = []
    for _ in range(10):
        waits.append(delays.failed(keys))
        now.t += 61
    assert waits == [0, 0, 0, 2, 4, 8, 16, 32, 60, 60]


def test_a_delay_runs_out_and_a_success_clears_it():
    now = Ticker()
    delays = SignInDelays(now)
    keys = delays.keys("director", "10.0.0.5")
    for _ in range(5):
        delays.failed(keys)
    assert delays.wait(keys) == 4
    now.t += 3.5
    assert delays.wait(keys) == 0.5
    now.t += 0.5
    assert delays.wait(keys) == 0
    delays.failed(keys)
    assert delays.wait(keys) == 8
    delays.succeeded(keys)
    assert delays.wait(keys) == 0


def test_the_account_and_the_source_count_separately():
    delays = SignInDelays(Ticker())
    for source in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"):
        delays.failed(delays.keys("Director", source))
    assert delays.wait(delays.keys("director", "10.0.0.9")) == 2  # the account is held
    assert delays.wait(delays.keys("county-it", "10.0.0.1")) == 0  # each source failed once
    assert delays.wait(delays.keys("director", "10.0.0.9", device="abc")) == 0  # a known browser is not


def test_memory_stays_bounded_when_someone_sprays_addresses():
    delays = SignInDelays(Ticker(), max_tracked=100)
    for i in range(1000):
        delays.failed(delays.keys(f"u{i}", f"10.{i // 256}.{i % 256}.1"))
    assert len(delays._tallies) <= 100


@pytest.mark.parametrize("order", [("device", "county", "township"), ("township", "device", "county")])
def test_settings_merge_widest_scope_first_then_the_page(order):
    data = {"county": {"health_interval": 100, "status_interval": 20}, "township": {"health_interval": 200}, "device": {"health_interval": 300}}
    merged, source = merge_settings({scope: data[scope] for scope in order}, {})
    assert merged == {"health_interval": 300, "status_interval": 20}
    assert source == {"health_interval": "device", "status_interval": "county"}
    merged, source = merge_settings(data, {"status_interval": 90, "retired_setting": 5})
    assert merged == {"health_interval": 300, "status_interval": 90} and source["status_interval"] == "local"
    assert merge_settings({}, {}) == ({"health_interval": 300, "status_interval": 60}, {"health_interval": "default", "status_interval": "default"})
