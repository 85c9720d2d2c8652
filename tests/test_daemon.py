"""The daemon in-process, with a fake clock: time anchors, alarms, the control socket, the CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from appliance import store as store_module
from appliance.clock import FakeClock
from appliance.config import load_config
from appliance.control import ControlClient, ControlServer
from appliance.daemon import Daemon
from appliance.errors import ControlError, StoreError
from conftest import REPO, write_config


@pytest.fixture
def offline_daemon(tmp_path):
    """A daemon with no broker (record and queue only) and a clock the test moves."""
    clock = FakeClock(synced=False)
    d = Daemon(load_config(write_config(tmp_path / "dev")), clock=clock, simulate=True)
    d.start()
    yield d
    d.stop()


def types(d: Daemon) -> list[str]:
    return [r[0] for r in d.store.rows("SELECT type FROM outbox ORDER BY id")]


def test_without_a_broker_presses_are_recorded_and_queued(offline_daemon):
    d = offline_daemon
    d.buttons.press("w1", "very_dissatisfied")
    assert d.uplink.info.state == "disabled"
    assert d.store.depth >= 1
    event = d.store.recent_events(1)[0]
    assert [e["type"] for e in d.store.recent_events(2)] == ["followup.opened", "rating.recorded"]
    event = d.store.recent_events(2)[1]
    assert event["data"]["level_label"] == "非常不满意"
    assert event["outbox_state"] == "pending"


def test_the_daemon_copies_the_wal_back_off_the_press_path(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "CHECKPOINT_INTERVAL_S", 0.05)
    monkeypatch.setattr(store_module, "CHECKPOINT_AFTER_ROWS", 1)
    d = Daemon(load_config(write_config(tmp_path / "dev")), clock=FakeClock(synced=False), simulate=True)
    d.start()
    try:
        db = Path(d.config.store.path)

        def ratings_in_the_file() -> int:  # the database file alone, without the WAL
            conn = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
            try:
                return conn.execute("SELECT COUNT(*) FROM outbox WHERE type = 'rating.recorded'").fetchone()[0]
            except sqlite3.OperationalError:  # the tables themselves are not copied yet
                return 0
            finally:
                conn.close()

        d.buttons.press("w1", "satisfied")
        deadline = time.monotonic() + 10
        while ratings_in_the_file() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ratings_in_the_file() == 1
        assert d.checkpointer.is_alive()
    finally:
        d.stop()
    assert not d.checkpointer.is_alive()


def test_events_before_sync_are_marked_and_an_anchor_follows_the_sync(offline_daemon):
    d = offline_daemon
    clock: FakeClock = d.clock
    d.watch_clock()
    assert "clock_unsynced" in [a.code for a in d.store.active_alarms()]
    d.buttons.press("w1", "satisfied")
    before = d.store.recent_events(1)[0]
    assert before["clock_synced"] is False
    # NTP fixes the clock: the wall time jumps, the monotonic reading does not.
    clock.advance(5)
    clock.set_wall(clock.now().replace(year=2026, month=12, day=1), synced=True)
    d.watch_clock()
    anchor = [e for e in d.store.recent_events(10) if e["type"] == "clock.synced"][0]
    assert anchor["clock_synced"] is True and anchor["data"]["boot_id"] == before["boot_id"]
    assert "clock_unsynced" not in [a.code for a in d.store.active_alarms()]
    # The anchor lets a consumer correct the earlier event's time.
    from datetime import datetime, timedelta

    corrected = datetime.fromisoformat(anchor["data"]["time"]) - timedelta(seconds=(anchor["data"]["mono_ns"] - before["mono_ns"]) / 1e9)
    assert corrected == datetime.fromisoformat(anchor["data"]["time"]) - timedelta(seconds=5)
    # Only one anchor per transition.
    d.watch_clock()
    assert types(d).count("clock.synced") == 1



def _december_daemon(config) -> Daemon:
    """A synced daemon on Thursday 17 December 2026 with one 差评 whose deadline runs into 2027."""
    from datetime import datetime

    from appliance.clock import HALL_TZ

    d = Daemon(config, clock=FakeClock(datetime(2026, 12, 17, 10, 12, tzinfo=HALL_TZ)), simulate=True)
    d.start()
    return d


NEXT_YEAR = json.dumps({"version": 1, "data": {"years": {"2027": {"holidays": ["2027-01-01"], "workdays": []}}}}).encode()


def rescheduled(d: Daemon) -> list[tuple[str, str]]:
    return [(e["data"]["previous_rectify_due"], e["data"]["rectify_due"]) for e in d.store.recent_events(100) if e["type"] == "followup.rescheduled"]


@pytest.mark.parametrize("failure", [StoreError("disk I/O error"), ValueError("a row that cannot be read")], ids=["store", "unexpected"])
def test_a_calendar_from_the_county_reschedules_open_followups_and_maintenance_retries_a_failed_recount(tmp_path, monkeypatch, caplog, failure):
    d = _december_daemon(load_config(write_config(tmp_path / "dev")))
    try:
        d.buttons.press("w1", "dissatisfied")  # fifteen working days run into 2027, on the weekday rule
        assert "calendar_year_unknown" in [a.code for a in d.store.active_alarms()]
        monkeypatch.setattr(d.ratings, "reschedule", lambda: (_ for _ in ()).throw(failure))
        d.router.handle("set", "county", "calendar", NEXT_YEAR, d.recorder.topics.desired("county", "calendar"))
        # The calendar is applied all the same (not refused), and the failure is logged.
        assert "state.applied" in types(d) and "command.rejected" not in types(d) and rescheduled(d) == []
        assert "could not reschedule follow-ups on the hall calendar" in caplog.text
        assert "calendar_year_unknown" not in [a.code for a in d.store.active_alarms()]
        monkeypatch.undo()
        d.maintenance()
        d.maintenance()
        assert rescheduled(d) == [("2027-01-07T10:12:00+08:00", "2027-01-08T10:12:00+08:00")]
    finally:
        d.stop()


def test_a_calendar_that_leaves_out_a_year_in_use_raises_the_alarm_again(tmp_path):
    d = _december_daemon(load_config(write_config(tmp_path / "dev")))
    active = lambda: {a.code: a.detail for a in d.store.active_alarms()}  # noqa: E731
    try:
        d.buttons.press("w1", "dissatisfied")  # fifteen working days run into 2027
        assert "2027" in active()["calendar_year_unknown"]
        d.router.handle("set", "county", "calendar", NEXT_YEAR, d.recorder.topics.desired("county", "calendar"))
        assert "calendar_year_unknown" not in active()
        # Version 2 names 2028 only: 2027, still in use by the open follow-up, is on the weekday rule again.
        v2 = json.dumps({"version": 2, "data": {"years": {"2028": {"holidays": ["2028-01-03"]}}}}).encode()
        d.router.handle("set", "county", "calendar", v2, d.recorder.topics.desired("county", "calendar"))
        assert d.calendar.source(2027) == "weekday_rule"
        assert "no holiday calendar for 2027" in active()["calendar_year_unknown"]
        assert [e["type"] for e in d.store.recent_events(100)].count("alarm.raised") == 2
        d.router.handle("set", "county", "calendar", NEXT_YEAR.replace(b'"version": 1', b'"version": 3'), d.recorder.topics.desired("county", "calendar"))
        assert "calendar_year_unknown" not in active()
    finally:
        d.stop()


def test_a_year_no_longer_in_use_raises_no_alarm_when_a_calendar_leaves_it_out(tmp_path):
    d = _december_daemon(load_config(write_config(tmp_path / "dev")))
    active = lambda: [a.code for a in d.store.active_alarms()]  # noqa: E731
    try:
        d.buttons.press("w1", "dissatisfied")
        d.router.handle("set", "county", "calendar", NEXT_YEAR, d.recorder.topics.desired("county", "calendar"))
        (followup,) = d.ratings.open_followups()
        for outcome in ("called_back", "rectified"):
            close = json.dumps({"command_id": outcome, "args": {"followup_id": followup["followup_id"], "outcome": outcome}}).encode()
            d.router.handle("cmd", "device", "followup.close", close, d.recorder.topics.command("followup.close"))
        assert d.ratings.open_followups() == []
        # The county now sends this year alone: nothing counts on 2027 any more.
        v2 = json.dumps({"version": 2, "data": {"years": {"2026": {"holidays": ["2026-12-14"]}}}}).encode()
        d.router.handle("set", "county", "calendar", v2, d.recorder.topics.desired("county", "calendar"))
        assert "calendar_year_unknown" not in active()
    finally:
        d.stop()


def test_an_alarm_from_the_last_run_stands_until_the_clock_is_synced(tmp_path):
    from datetime import datetime

    from appliance.clock import HALL_TZ

    config = load_config(write_config(tmp_path / "dev"))
    d = _december_daemon(config)
    try:
        d.buttons.press("w1", "dissatisfied")  # into 2027: the alarm
    finally:
        d.stop()
    # Closed while the daemon was down (as the county could have, had it run).
    conn = sqlite3.connect(config.store.path)
    conn.execute("UPDATE followups SET state = 'closed'")
    conn.commit()
    conn.close()
    clock = FakeClock(datetime(2026, 12, 18, 9, 0, tzinfo=HALL_TZ), synced=False)
    d = Daemon(config, clock=clock, simulate=True)
    d.start()
    try:
        # No clock yet: this year may be anything, so the alarm is not judged.
        assert "calendar_year_unknown" in [a.code for a in d.store.active_alarms()]
        d.maintenance()
        assert "calendar_year_unknown" in [a.code for a in d.store.active_alarms()]
        clock.synced = True
        d.maintenance()
        assert "calendar_year_unknown" not in [a.code for a in d.store.active_alarms()]
    finally:
        d.stop()


def test_a_wrong_clocks_year_never_raises_the_calendar_alarm(tmp_path):
    from datetime import datetime

    from appliance.clock import HALL_TZ

    clock = FakeClock(datetime(2000, 1, 1, 8, 5, tzinfo=HALL_TZ), synced=False)  # no RTC: the Pi's idea of time
    d = Daemon(load_config(write_config(tmp_path / "dev")), clock=clock, simulate=True)
    d.start()
    try:
        d.buttons.press("w1", "dissatisfied")  # deadlines counted in 2000, which no calendar knows
        d.maintenance()
        assert "calendar_year_unknown" not in [a.code for a in d.store.active_alarms()]
        clock.set_wall(datetime(2026, 11, 26, 10, 0, tzinfo=HALL_TZ), synced=True)
        d.watch_clock()  # the follow-up is counted again from its true time
        d.maintenance()
        assert d.ratings.open_followups()[0]["provisional"] is False
        assert "calendar_year_unknown" not in [a.code for a in d.store.active_alarms()]
    finally:
        d.stop()


def test_a_store_that_cannot_be_read_leaves_the_calendar_alarm_as_it_was(tmp_path, monkeypatch, caplog):
    d = _december_daemon(load_config(write_config(tmp_path / "dev")))
    try:
        d.buttons.press("w1", "dissatisfied")  # into 2027: the alarm
        monkeypatch.setattr(d.ratings, "years_in_use", lambda now: (_ for _ in ()).throw(StoreError("disk I/O error")))
        d.router.handle("set", "county", "calendar", NEXT_YEAR, d.recorder.topics.desired("county", "calendar"))
        d.maintenance()
        assert "calendar_year_unknown" in [a.code for a in d.store.active_alarms()]
        assert "could not read the years the follow-ups use" in caplog.text
        monkeypatch.undo()
        d.maintenance()  # the next round judges it
        assert "calendar_year_unknown" not in [a.code for a in d.store.active_alarms()]
    finally:
        d.stop()


@pytest.mark.parametrize(("day", "alarm"), [(30, False), (31, True)], ids=["30-december", "new-years-eve"])
def test_on_new_years_eve_an_unknown_next_year_is_in_use(tmp_path, day, alarm):
    from datetime import datetime

    from appliance.clock import HALL_TZ

    d = Daemon(load_config(write_config(tmp_path / "dev")), clock=FakeClock(datetime(2026, 12, day, 10, 0, tzinfo=HALL_TZ)), simulate=True)
    d.start()
    try:
        d.maintenance()  # the roster plans tonight's shifts into 1 January
        active = {a.code: a.detail for a in d.store.active_alarms()}
        assert ("calendar_year_unknown" in active) is alarm
        if alarm:
            assert active["calendar_year_unknown"].startswith("no holiday calendar for 2027:")
    finally:
        d.stop()


def test_maintenance_corrects_a_calendar_alarm_that_no_longer_holds(tmp_path):
    d = _december_daemon(load_config(write_config(tmp_path / "dev")))
    try:
        d.buttons.press("w1", "dissatisfied")
        d.router.handle("set", "county", "calendar", NEXT_YEAR, d.recorder.topics.desired("county", "calendar"))
        # A raise from another thread that read the calendar just before it changed, landing late.
        d.recorder.raise_alarm("calendar_year_unknown", "no holiday calendar for 2027: working days follow the weekday rule until the county sends one")
        d.maintenance()
        assert "calendar_year_unknown" not in [a.code for a in d.store.active_alarms()]
    finally:
        d.stop()


def test_a_start_counts_again_on_the_stored_calendar_once(tmp_path, monkeypatch):
    config = load_config(write_config(tmp_path / "dev"))
    d = _december_daemon(config)
    try:
        d.buttons.press("w1", "dissatisfied")
        # A run that applied the calendar and stopped before it could count again.
        monkeypatch.setattr(d.ratings, "reschedule", lambda: 0)
        d.router.handle("set", "county", "calendar", NEXT_YEAR, d.recorder.topics.desired("county", "calendar"))
        assert rescheduled(d) == []
    finally:
        d.stop()
    for _ in range(2):
        d = _december_daemon(config)
        try:
            assert rescheduled(d) == [("2027-01-07T10:12:00+08:00", "2027-01-08T10:12:00+08:00")]
        finally:
            d.stop()


def test_outbox_over_cap_raises_an_alarm_and_clears_it_when_drained(tmp_path):
    d = Daemon(load_config(write_config(tmp_path / "dev", store_extra="outbox_cap = 100")), clock=FakeClock(), simulate=True)
    d.start()
    try:
        for _ in range(100):
            d.buttons.press("w2", "satisfied")
        d.maintenance()
        assert "outbox_full" in [a.code for a in d.store.active_alarms()]
        ids = [r.id for r in d.store.unacked_after(0, 1000)]
        d.store.mark_published(ids, final=True)
        d.maintenance()
        assert "outbox_full" not in [a.code for a in d.store.active_alarms()]
        assert types(d).count("alarm.raised") == types(d).count("alarm.cleared") == 1
    finally:
        d.stop()


def test_status_reports_what_the_page_and_the_birth_need(offline_daemon):
    status = offline_daemon.status()
    assert set(status) >= {"version", "device", "uplink", "outbox", "clock", "alarms", "applied", "pin_factory"}
    assert status["pin_factory"] == "mock" and status["device"]["id"] == "hall-01"
    json.dumps(status)  # it must travel as JSON


def test_control_socket_presses_a_button_through_the_driver(offline_daemon, tmp_path):
    control = ControlClient(offline_daemon.config.control.socket)
    result = control.call("press", window="w2", level="dissatisfied")
    assert result == {"window": "w2", "level": "dissatisfied", "seq": 1, "recorded": True}
    assert offline_daemon.store.recent_events(1)[0]["data"]["window"] == "w2"
    assert control.call("press", window="w1", level="satisfied") == {"window": "w1", "level": "satisfied", "seq": 3, "recorded": True}


def test_the_status_and_the_control_socket_count_todays_presses(offline_daemon):
    d = offline_daemon
    control = ControlClient(d.config.control.socket)
    assert d.status()["ratings_today"] == {"counted": 0, "satisfied": 0, "flagged": 0, "rate": None}
    control.call("press", window="w1", level="satisfied")
    control.call("press", window="w2", level="dissatisfied")  # 差评: opens a follow-up
    control.call("press", window="w2", level="dissatisfied")  # at once again: flagged repeat
    assert d.status()["ratings_today"] == {"counted": 2, "satisfied": 1, "flagged": 1, "rate": 0.5}
    figures = control.call("figures")
    assert figures["total"] == d.status()["ratings_today"]
    w1, w2 = figures["windows"]
    assert (w1["window"], w1["levels"]["satisfied"], w2["window"], w2["levels"]["dissatisfied"], w2["flagged"]) == ("w1", 1, "w2", 1, 1)
    assert [(f["window"], f["level"]) for f in figures["followups"]] == [("w2", "dissatisfied"), ("w2", "dissatisfied")]


def test_a_press_on_a_held_button_is_reported_not_recorded(offline_daemon):
    d = offline_daemon
    d.buttons.pin("w1", "satisfied").drive_low()  # somebody holds it down: that press is recorded
    before = d.store.rows("SELECT COUNT(*) FROM ratings")[0][0]
    result = ControlClient(d.config.control.socket).call("press", window="w1", level="satisfied")
    assert result == {"window": "w1", "level": "satisfied", "seq": None, "recorded": False}
    assert d.store.rows("SELECT COUNT(*) FROM ratings")[0][0] == before == 1


def test_a_press_on_a_held_button_is_not_reported_for_another_button_pressed_meanwhile(offline_daemon, monkeypatch):
    d = offline_daemon
    d.buttons.pin("w1", "satisfied").drive_low()  # held down
    real = d.buttons.press

    def with_a_neighbour(window, level):
        real(window, "very_satisfied")  # somebody presses the next button at that window meanwhile
        real(window, level)

    monkeypatch.setattr(d.buttons, "press", with_a_neighbour)
    result = ControlClient(d.config.control.socket).call("press", window="w1", level="satisfied")
    assert result == {"window": "w1", "level": "satisfied", "seq": None, "recorded": False}


@pytest.mark.parametrize(
    ("op", "args", "message"),
    [
        ("press", {"window": "w9", "level": "satisfied"}, "window 'w9' has no buttons; windows: w1, w2"),
        ("press", {"window": "w2", "level": "very_satisfied"}, "window 'w2' has no 'very_satisfied' button; its buttons: basically_satisfied, dissatisfied, satisfied"),
        ("press", {"window": "w1", "level": "great"}, "level: 'great' is not a rating level"),
        ("press", {"window": "w1"}, "level: is required"),
        ("launch", {}, "unknown operation 'launch'"),
        ("badge", {"card": "123"}, "card: the badge reader is disabled; set [badge] enabled = true"),
    ],
)
def test_control_socket_refuses_bad_requests_clearly(offline_daemon, op, args, message):
    with pytest.raises(ControlError, match=re.escape(message)):
        ControlClient(offline_daemon.config.control.socket).call(op, **args)
    assert offline_daemon.control.is_alive()


def test_control_socket_answers_malformed_lines(tmp_path):
    server = ControlServer(tmp_path / "c.sock")
    assert server.dispatch(b"not json")["error"].startswith("malformed request")
    assert server.dispatch(b'{"op": "x", "args": []}')["error"].startswith("malformed request")
    assert "over" in server.dispatch(b"x" * 70_000)["error"]
    server.stop()


def test_a_refusal_sent_before_the_request_was_read_still_reaches_the_client(tmp_path):
    """The daemon refuses a stranger at once and closes; the client's request then meets a
    closed socket (EPIPE), and the refusal it was sent must still be what it reports."""
    path = tmp_path / "control.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    refused = threading.Event()

    def refuse() -> None:
        conn, _ = server.accept()
        conn.sendall(b'{"ok": false, "error": "not allowed: join the appliance\'s group to use the control socket"}\n')
        conn.close()
        refused.set()

    threading.Thread(target=refuse, daemon=True).start()
    real_connect = socket.socket.connect

    def connect_then_wait(self, address):
        real_connect(self, address)
        assert refused.wait(5)  # the request is sent only after the daemon has closed

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(socket.socket, "connect", connect_then_wait)
            with pytest.raises(ControlError, match=r"^not allowed: join the appliance's group"):
                ControlClient(path).call("status")
    finally:
        server.close()


def test_control_socket_refuses_a_stranger_and_admits_the_group(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("switching users needs root")
    import grp
    import pwd

    import shutil
    import tempfile

    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(os.getgid()).gr_name
    # pytest's tmp_path sits under a root-only directory; the stranger must reach the socket.
    shared = Path(tempfile.mkdtemp(prefix="hall-ctl-"))
    os.chmod(shared, 0o755)
    server = ControlServer(shared / "c.sock", group=group)
    server.register("ping", lambda args: "pong")
    server.start()
    os.chmod(server.path, 0o666)  # only the peer check stands between a stranger and the daemon

    def call_as(uid: int, gids: list[int]) -> str:
        code = (
            "import os, sys, json; sys.path.insert(0, %r)\n"
            "from appliance.control import ControlClient\n"
            "from appliance.errors import ControlError\n"
            "client = ControlClient(%r)\n"
            "os.setgroups(%r); os.setgid(%d); os.setuid(%d)\n"
            "try: print(client.call('ping'))\n"
            "except ControlError as e: print('refused:', e)\n"
        ) % (str(REPO), str(server.path), gids, gids[0], uid)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        assert not r.stderr, r.stderr
        return r.stdout.strip()

    try:
        assert call_as(nobody.pw_uid, [nobody.pw_gid]).startswith("refused: not allowed")
        assert call_as(nobody.pw_uid, [nobody.pw_gid, os.getgid()]) == "pong"
    finally:
        server.stop()
        shutil.rmtree(shared, ignore_errors=True)


def test_sim_cli_reports_a_daemon_that_is_not_running(tmp_path):
    config = write_config(tmp_path / "dev")
    r = subprocess.run([sys.executable, "-m", "appliance.cli", "sim", "--config", str(config), "press", "w1", "satisfied"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 1
    assert "the appliance daemon is not running" in r.stderr and "Traceback" not in r.stderr


def test_simulate_starts_a_private_broker_and_sim_press_shows_up_there(tmp_path):
    """What `make run` does: the simulator, its own Mosquitto, and `sim press` from a shell."""
    config = tmp_path / "sim.toml"
    config.write_text(
        (REPO / "config" / "simulator.toml").read_text()
        .replace('path = "../.sim/hall.db"', f'path = "{tmp_path}/state/hall.db"')
        .replace('socket = "../.sim/control.sock"', f'socket = "{tmp_path}/state/control.sock"')
        .replace('port = 8080', 'port = 18080')
    )
    proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "simulate", "--config", str(config), "--web-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        sub_cmd = None
        lines = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sub_cmd is None:
            line = proc.stdout.readline()
            lines.append(line)
            if line.strip().startswith("mosquitto_sub"):
                sub_cmd = line.strip()
        assert sub_cmd, "".join(lines)
        port = re.search(r"-p (\d+)", sub_cmd).group(1)
        # Run the printed command itself, narrowed to button events, until one arrives.
        assert "'hall/v1/#'" in sub_cmd
        watcher = subprocess.Popen(sub_cmd.replace("'hall/v1/#'", "'hall/v1/+/+/+/evt/rating/#'") + " -C 1 -W 40", shell=True, stdout=subprocess.PIPE, text=True)
        while "ready" not in "".join(lines):
            lines.append(proc.stdout.readline())
        # The watcher subscribes in its own time and sees only what is published after that:
        # press again until it has seen one (each press is a real one, recorded and sent).
        for _ in range(10):
            r = subprocess.run([sys.executable, "-m", "appliance.cli", "sim", "--config", str(config), "press", "w1", "very_satisfied"], capture_output=True, text=True, cwd=REPO)
            assert r.returncode == 0, r.stderr
            assert r.stdout.startswith("pressed very_satisfied at w1")
            try:
                watcher.wait(timeout=2)
                break
            except subprocess.TimeoutExpired:
                continue
        out, _ = watcher.communicate(timeout=20)
        topic, payload = out.split(" ", 1)
        assert topic == "hall/v1/sim-county/sim-township/sim-hall-01/evt/rating/recorded"
        assert json.loads(payload)["data"]["level"] == "very_satisfied"
        assert int(port) > 0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    assert proc.returncode == 0


def test_a_clean_stop_records_the_proof_of_play_counted_since_the_last_report(tmp_path):
    path = write_config(tmp_path / "dev")
    path.write_text(path.read_text().replace("[control]", '[display]\nenabled = true\ndriver = "emulator"\n\n[control]'))
    d = Daemon(load_config(path), clock=FakeClock(), simulate=True)
    d.start()
    try:
        item = {"id": "notice-1", "kind": "announcement", "text": "明日上午停水"}
        topic = d.recorder.topics.desired("county", "board")
        d.router.handle("set", "county", "board", json.dumps({"version": 1, "data": {"items": [item]}}, ensure_ascii=False).encode(), topic)
        for _ in range(60):  # half a minute of the board on the fake clock: several showings
            d.clock.advance(0.5)
            d.board.next_frame()
        assert "board.played" not in types(d)  # the hourly report is not due yet
    finally:
        d.stop()
    store = store_module.Store(d.config.store.path, free_space_floor_mb=0, reserve_mb=0, recover=False)
    try:
        [(payload,)] = store.rows("SELECT payload FROM outbox WHERE type = 'board.played'")
    finally:
        store.close()
    [play] = json.loads(payload)["data"]["plays"]
    assert (play["source"], play["item_id"]) == ("county", "notice-1") and play["shows"] >= 2
