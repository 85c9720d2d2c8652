"""`hall-appliance web` (cheroot, HTTPS with the device's certificate) and `hall-appliance passwd`."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from appliance.accounts import Accounts
from appliance.config import load_config
from appliance.store import Store
from conftest import REPO, write_config


def hall_appliance(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], input=stdin, capture_output=True, text=True, cwd=REPO, timeout=60)


def accounts_of(config: Path):
    store = Store(load_config(config).store.path, reserve_mb=0, recover=False)
    return store, Accounts(store)


def test_passwd_sets_a_password_read_from_stdin(tmp_path):
    config = write_config(tmp_path / "dev")
    r = hall_appliance("passwd", "director", "--role", "director", "--config", str(config), stdin="the-directors-own\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "director (director): password set"
    store, accounts = accounts_of(config)
    try:
        account = accounts.verify("director", "the-directors-own")
        assert account is not None and not account.must_change
        entry = accounts.audit_log(1)[0]
        assert entry.action == "account.created" and entry.username.startswith("cli:")
    finally:
        store.close()


def test_passwd_generates_a_password_that_must_be_changed_at_first_sign_in(tmp_path):
    config = write_config(tmp_path / "dev")
    assert hall_appliance("passwd", "director", "--role", "director", "--config", str(config), stdin="first-password-1\n").returncode == 0
    r = hall_appliance("passwd", "director", "--generate", "--config", str(config))
    assert r.returncode == 0, r.stderr
    password = re.search(r"new password (\S+) \(to be changed at the first sign-in\)", r.stdout).group(1)
    store, accounts = accounts_of(config)
    try:
        assert accounts.verify("director", password).must_change
        assert accounts.verify("director", "first-password-1") is None
        assert accounts.audit_log(1)[0].action == "password.reset"
    finally:
        store.close()


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["newcomer"], "a-long-password\n", "there is no account 'newcomer': give its role (director or county_it) to create it; nothing changed"),
        (["director", "--role", "director"], "short\n", "the password has 5 characters; use at least 10; nothing changed"),
        (["Hall Director", "--role", "director"], "a-long-password\n", "user name 'Hall Director' is not valid"),
    ],
)
def test_passwd_refuses_bad_input_and_changes_nothing(tmp_path, args, stdin, message):
    config = write_config(tmp_path / "dev")
    r = hall_appliance("passwd", *args, "--config", str(config), stdin=stdin)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    store, accounts = accounts_of(config)
    try:
        assert accounts.all() == []
    finally:
        store.close()


@pytest.fixture
def certificate(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "web.crt", tmp_path / "web.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def test_web_serves_https_with_the_devices_certificate_and_secure_cookies(tmp_path, certificate):
    cert, key = certificate
    config = write_config(tmp_path / "dev")
    config.write_text(config.read_text() + f'\n[web]\nhost = "127.0.0.1"\ncert_file = "{cert}"\nkey_file = "{key}"\n')
    assert hall_appliance("passwd", "county-it", "--role", "county_it", "--config", str(config), stdin="county-it-pass-1\n").returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "web", "--config", str(config), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        url = None
        deadline = time.monotonic() + 20
        lines = []
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if m := re.search(r"the config page is at (https://127\.0\.0\.1:\d+/)", line):
                url = m.group(1)
        assert url, "".join(lines)
        context = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(url + "login", context=context, timeout=10) as response:
            assert response.status == 200
            cookies = response.headers.get_all("Set-Cookie")
            assert cookies and all("Secure" in c and "HttpOnly" in c and "SameSite=Strict" in c for c in cookies)
            assert "登录" in response.read().decode()
        # The daemon is not running: the page still answers, and says so.
        auth = base64.b64encode(b"county-it:county-it-pass-1").decode()
        request = urllib.request.Request(url + "api/status", headers={"Authorization": f"Basic {auth}"})
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            status = json.loads(response.read())
        assert status["daemon"]["running"] is False and status["device"]["id"] == "hall-01"
        # No plain HTTP on the TLS port.
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(url.replace("https://", "http://") + "login", timeout=5).read()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
