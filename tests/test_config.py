"""The config parser and ``hall-appliance check-config``: the shipped files, every broken case, properties."""

from __future__ import annotations

import ast
import copy
import dataclasses
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from appliance import config as config_module
from appliance.config import Config, Problem, load_config, parse_config
from appliance.errors import ConfigError
from services.levels import LEVELS

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "appliance.example.toml"
SIMULATOR = REPO / "config" / "simulator.toml"

ID_FIX = "use 1 to 63 lower-case letters, digits and dashes, starting with a letter or digit, e.g. 'xlgl-baiyinxile-01'"
LEVEL_LIST = "very_satisfied, satisfied, basically_satisfied, dissatisfied, very_dissatisfied"

VALID = """\
[device]
id = "hall-01"
hall = "测试政务服务中心"
township = "test-township"
county = "test-county"

[broker]
host = "mqtt.county.example"

[[windows]]
id = "w1"
name = "综合受理窗口"
buttons = { satisfied = 17, basically_satisfied = 27, dissatisfied = 22 }

[[windows]]
id = "w2"
name = "社保医保窗口"
buttons = { satisfied = 5, basically_satisfied = 6, dissatisfied = 13 }
indicator_pin = 12
"""

MAX7219 = '\n[display]\nenabled = true\ndriver = "max7219"\n'


def edited(*changes: tuple[str, str], append: str = "") -> str:
    """VALID with each ``old`` (which must occur exactly once) replaced by ``new``."""
    text = VALID
    for old, new in changes:
        assert text.count(old) == 1, f"{old!r} is not unique in VALID"
        text = text.replace(old, new)
    return text + append


def check_config(path: Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``hall-appliance check-config PATH`` as a person would run it."""
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", "check-config", str(path)],
        capture_output=True, encoding="utf-8", cwd=cwd, timeout=30,
    )


def problem_lines(exc: ConfigError) -> list[str]:
    return [str(p) for p in exc.problems]


def assert_check_config_fails(path: Path, expected: list[str]) -> None:
    result = check_config(path)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    count = len(expected)
    assert result.stderr.startswith(f"{path}: {count} problem{'s' if count != 1 else ''}:\n"), result.stderr
    for line in expected:
        assert f"  - {line}\n" in result.stderr, result.stderr


# -- the shipped files ---------------------------------------------------------------------


@pytest.mark.parametrize("path", [EXAMPLE, SIMULATOR], ids=["example", "simulator"])
def test_shipped_config_parses_and_checks_ok(path):
    assert isinstance(load_config(path), Config)
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: OK — device ")
    assert result.stderr == ""


def test_example_config_values():
    config = load_config(EXAMPLE)
    assert config.device.id == "xlgl-baiyinxile-01"
    assert config.broker.port == 8883
    assert config.broker.username == "xlgl-baiyinxile-01"
    assert config.broker.tls is not None and config.broker.tls.key_file == Path("/etc/hall-appliance/secrets/device.key")
    assert [w.id for w in config.windows] == ["w1", "w2"]
    assert config.window("w2").buttons == (("satisfied", 17), ("basically_satisfied", 27), ("dissatisfied", 22))
    assert config.window("w3") is None
    assert config.display.enabled and config.display.driver == "max7219"
    assert config.source == EXAMPLE


def test_simulator_config_keeps_its_state_beside_the_checkout():
    config = load_config(SIMULATOR)
    assert config.store.path.resolve() == (REPO / ".sim" / "hall.db").resolve()
    assert config.control.socket.resolve() == (REPO / ".sim" / "control.sock").resolve()
    assert config.broker.host is None
    assert config.gpio.pin_factory == "mock"


def _parser_known_keys() -> dict[str, set[str]]:
    """Section ("" for the top level) → the keys parse_config accepts there, read from its source."""
    tree = ast.parse(Path(config_module.__file__).read_text(encoding="utf-8"))
    known: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("table", "unknown")):
            continue
        if not isinstance(node.args[-1], ast.Tuple):  # _Reader.table passing its own argument on
            continue
        keys = set(ast.literal_eval(node.args[-1]))
        if node.func.attr == "table":  # r.table(parent, "broker", "tls", (...))
            parent, key = ast.literal_eval(node.args[1]), ast.literal_eval(node.args[2])
            known[f"{parent}.{key}" if parent else key] = keys
        elif node.func.attr == "unknown":  # r.unknown(data, "", (...)) and r.unknown(w, path, (...)) for each window
            where = node.args[1]
            known[ast.literal_eval(where) if isinstance(where, ast.Constant) else "windows"] = keys
    return known


def _documented_keys(text: str) -> dict[str, set[str]]:
    """Section → the keys a TOML file sets or shows commented out (``# key = …``)."""
    documented: dict[str, set[str]] = {"": set()}
    section = ""
    for line in text.splitlines():
        if header := re.fullmatch(r"\[\[?([a-z_.]+)\]\]?\s*", line):
            section = header.group(1)
            parent, _, name = section.rpartition(".")
            documented.setdefault(parent, set()).add(name)
            documented.setdefault(section, set())
        elif key := re.match(r"#?\s*([a-z_]+)\s*=\s*\S", line):
            documented[section].add(key.group(1))
    return documented


KNOWN = _parser_known_keys()


def test_known_keys_are_found_in_the_parser():
    # If the parser is restructured, this test has to be taught the new shape, not pass silently.
    assert set(KNOWN) == {"", "device", "hall", "broker", "broker.tls", "store", "gpio", "windows", "ratings", "display", "badge", "web", "control", "clock", "complaints"}
    assert KNOWN[""] == {f.name for f in dataclasses.fields(Config)} - {"source"}


def test_example_documents_every_key_the_parser_knows():
    documented = _documented_keys(EXAMPLE.read_text(encoding="utf-8"))
    undocumented = {s: sorted(keys - documented.get(s, set())) for s, keys in KNOWN.items() if keys - documented.get(s, set())}
    assert undocumented == {}, "add these keys to config/appliance.example.toml"
    unknown = {s: sorted(keys - KNOWN.get(s, set())) for s, keys in documented.items() if keys - KNOWN.get(s, set())}
    assert unknown == {}, "the example shows keys the parser does not know"


def test_example_names_every_rating_level():
    text = EXAMPLE.read_text(encoding="utf-8")
    assert [level.code for level in LEVELS if level.code not in text] == []


# -- broken configs, each with its exact problem lines -------------------------------------

BROKEN = [
    pytest.param(edited(('id = "hall-01"\n', "")), [f"device.id = (missing): is required. Fix: {ID_FIX}"], id="device-id-missing"),
    pytest.param(edited(('"hall-01"', '"Hall-01"')), [f"device.id = 'Hall-01': is not a valid id. Fix: {ID_FIX}"], id="device-id-upper-case"),
    pytest.param(edited(('"hall-01"', '"hall_01"')), [f"device.id = 'hall_01': is not a valid id. Fix: {ID_FIX}"], id="device-id-underscore"),
    pytest.param(edited(('"hall-01"', '"hall-01\\n"')), [f"device.id = 'hall-01\\n': is not a valid id. Fix: {ID_FIX}"], id="device-id-trailing-newline"),
    pytest.param(edited(('township = "test-township"\n', "")), [f"device.township = (missing): is required. Fix: {ID_FIX}"], id="township-missing"),
    pytest.param(
        edited(('hall = "测试政务服务中心"', 'hall = "测试政务服务中心\\n[broker]"')),
        ["device.hall = '测试政务服务中心\\n[broker]': contains a line break or another control character. Fix: give the hall's name on one line, e.g. '白音锡勒苏木政务服务中心'"],
        id="hall-name-with-a-line-break",
    ),
    pytest.param(
        edited(('id = "w2"', 'id = "w1"')),
        ["windows[1].id = 'w1': repeats windows[0].id. Fix: give every window its own id"],
        id="duplicate-window-id",
    ),
    pytest.param(
        edited(("{ satisfied = 5,", "{ satisfied = 17,")),
        ["windows[1].buttons.satisfied = 17: GPIO 17 is already used by windows[0].buttons.satisfied. Fix: give every button and indicator its own pin"],
        id="same-pin-in-two-windows",
    ),
    pytest.param(
        edited(("indicator_pin = 12", "indicator_pin = 6")),
        ["windows[1].indicator_pin = 6: GPIO 6 is already used by windows[1].buttons.basically_satisfied. Fix: give every button and indicator its own pin"],
        id="indicator-on-a-button-pin",
    ),
    pytest.param(
        edited(("{ satisfied = 5,", "{ satisfied = 10,"), append=MAX7219),
        ["windows[1].buttons.satisfied = 10: GPIO 10 belongs to SPI0, which the display uses. Fix: move it off GPIO 7, 8, 9, 10, 11"],
        id="button-on-spi0-with-max7219",
    ),
    pytest.param(
        edited(("indicator_pin = 12", "indicator_pin = 20"), append=MAX7219 + "spi_port = 1\n"),
        [
            "windows[0].buttons.satisfied = 17: GPIO 17 belongs to SPI1, which the display uses. Fix: move it off GPIO 16, 17, 18, 19, 20, 21",
            "windows[1].indicator_pin = 20: GPIO 20 belongs to SPI1, which the display uses. Fix: move it off GPIO 16, 17, 18, 19, 20, 21",
        ],
        id="pins-on-spi1-with-max7219-on-spi1",
    ),
    pytest.param(
        edited(("{ satisfied = 17,", "{ satisfed = 17,")),
        [f"windows[0].buttons.satisfed = 17: 'satisfed' is not a rating level. Fix: did you mean 'satisfied'? levels are: {LEVEL_LIST}"],
        id="unknown-level-with-suggestion",
    ),
    pytest.param(
        edited(("buttons = { satisfied = 17, basically_satisfied = 27, dissatisfied = 22 }\n", "")),
        ["windows[0].buttons = (missing): has no buttons. Fix: map 3 to 5 rating levels to GPIO pins, e.g. buttons = { satisfied = 17, basically_satisfied = 27, dissatisfied = 22 }"],
        id="window-without-buttons",
    ),
    pytest.param(
        edited(("buttons = { satisfied = 17, basically_satisfied = 27, dissatisfied = 22 }", "buttons = {}")),
        ["windows[0].buttons = {}: has no buttons. Fix: map 3 to 5 rating levels to GPIO pins, e.g. buttons = { satisfied = 17, basically_satisfied = 27, dissatisfied = 22 }"],
        id="window-with-empty-buttons",
    ),
    pytest.param(
        edited(("buttons = { satisfied = 17, basically_satisfied = 27, dissatisfied = 22 }", 'buttons = "17, 27, 22"')),
        ["windows[0].buttons = '17, 27, 22': must be a table of level = pin, or a list of 3 or 5 pins. Fix: write e.g. buttons = { satisfied = 17, basically_satisfied = 27, dissatisfied = 22 }"],
        id="buttons-not-a-table",
    ),
    pytest.param(
        edited(("{ satisfied = 17, basically_satisfied = 27, dissatisfied = 22 }", "{ satisfied = 17, dissatisfied = 22 }")),
        ["windows[0].buttons = {'satisfied': 17, 'dissatisfied': 22}: has 2 buttons; a window has 3 to 5. Fix: map 3 to 5 rating levels to GPIO pins"],
        id="two-buttons",
    ),
    pytest.param(
        edited((
            "{ satisfied = 17, basically_satisfied = 27, dissatisfied = 22 }",
            "{ very_satisfied = 17, satisfied = 27, basically_satisfied = 22, dissatisfied = 23, very_dissatisfied = 24, neutral = 25 }",
        )),
        [
            f"windows[0].buttons.neutral = 25: 'neutral' is not a rating level. Fix: levels are: {LEVEL_LIST}",
            "windows[0].buttons = {'very_satisfied': 17, 'satisfied': 27, 'basically_satisfied': 22, 'dissatisfied': 23, 'very_dissatisfied': 24, 'neutral': 25}: has 6 buttons; a window has 3 to 5. Fix: map 3 to 5 rating levels to GPIO pins",
        ],
        id="six-buttons",
    ),
    pytest.param(
        edited(("{ satisfied = 17,", "{ satisfied = 40,")),
        ["windows[0].buttons.satisfied = 40: is not a usable BCM GPIO number (2–27). Fix: give the button's BCM GPIO number"],
        id="pin-out-of-range",
    ),
    pytest.param(
        edited(("{ satisfied = 17,", '{ satisfied = "17",')),
        ["windows[0].buttons.satisfied = '17': must be a whole number. Fix: give the button's BCM GPIO number"],
        id="pin-as-text",
    ),
    pytest.param(
        edited(("indicator_pin = 12", "indicator_pin = 1")),
        ["windows[1].indicator_pin = 1: is not a usable BCM GPIO number (2–27). Fix: give the indicator LED's BCM GPIO number, or leave it out"],
        id="indicator-on-id-eeprom-pin",
    ),
    pytest.param(
        edited(("[broker]", "[brokr]")),
        ["brokr = {'host': 'mqtt.county.example'}: is not a known key. Fix: did you mean 'broker'?"],
        id="top-level-typo",
    ),
    pytest.param(
        edited(append="[dispaly]\nenabled = true\n"),
        ["dispaly = {'enabled': True}: is not a known key. Fix: did you mean 'display'?"],
        id="section-typo-after-windows",
    ),
    pytest.param(
        edited(('host = "mqtt.county.example"', 'host = "mqtt.county.example"\nkeepalvie = 30')),
        ["broker.keepalvie = 30: is not a known key. Fix: did you mean 'keepalive'?"],
        id="section-key-typo",
    ),
    pytest.param(
        edited(("indicator_pin = 12", "indicator_pn = 12")),
        ["windows[1].indicator_pn = 12: is not a known key. Fix: did you mean 'indicator_pin'?"],
        id="window-key-typo",
    ),
    pytest.param(
        edited(('county = "test-county"', 'county = "test-county"\ncolour = "red"')),
        ["device.colour = 'red': is not a known key. Fix: known keys are: id, hall, township, county"],
        id="unknown-key-without-suggestion",
    ),
    pytest.param(
        edited(('host = "mqtt.county.example"', 'host = "mqtt.county.example"\nport = "8883"')),
        ["broker.port = '8883': must be a whole number. Fix: give a TCP port from 1 to 65535"],
        id="port-as-text",
    ),
    pytest.param(
        edited(('host = "mqtt.county.example"', 'host = "mqtt.county.example"\nport = 70000')),
        ["broker.port = 70000: must be between 1 and 65535. Fix: give a TCP port from 1 to 65535"],
        id="port-out-of-range",
    ),
    pytest.param(
        edited(('host = "mqtt.county.example"', 'host = "mqtt.county.example"\naggregator_ack = "false"')),
        ["broker.aggregator_ack = 'false': must be true or false. Fix: true when the county aggregator acknowledges events, false to trust the broker's PUBACK"],
        id="aggregator-ack-as-text",
    ),
    pytest.param(
        edited(('host = "mqtt.county.example"', 'host = "mqtt.county.example"\ninflight = true')),
        ["broker.inflight = True: must be a whole number. Fix: give a window between 1 and 1000"],
        id="inflight-as-boolean",
    ),
    pytest.param(
        edited(('host = "mqtt.county.example"', 'host = "mqtt.county.example"\nreconnect_min = 30\nreconnect_max = 10')),
        ["broker.reconnect_min = 30: is above broker.reconnect_max (10). Fix: make reconnect_min the smaller of the two"],
        id="reconnect-bounds-crossed",
    ),
    pytest.param(
        edited(append='\n[broker.tls]\nca_file = "/etc/hall-appliance/secrets/ca.crt"\ncert_file = "/etc/hall-appliance/secrets/device.crt"\n'),
        ["broker.tls = {'cert_file': '/etc/hall-appliance/secrets/device.crt', 'key_file': None}: needs both cert_file and key_file, or neither. Fix: give both files from the device bundle"],
        id="tls-cert-without-key",
    ),
    pytest.param(
        edited(append='\n[broker.tls]\ncert_file = "/etc/hall-appliance/secrets/device.crt"\nkey_file = "/etc/hall-appliance/secrets/device.key"\n'),
        ["broker.tls.ca_file = (missing): is required. Fix: give the county CA certificate from the device bundle"],
        id="tls-without-ca",
    ),
    pytest.param(
        edited(append='\n[web]\nkey_file = "/etc/hall-appliance/secrets/web.key"\n'),
        ["web = {'cert_file': None, 'key_file': '/etc/hall-appliance/secrets/web.key'}: needs both cert_file and key_file, or neither. Fix: give both files from the device bundle"],
        id="web-key-without-cert",
    ),
    pytest.param(
        edited(append="\n[badge]\nenabled = true\n"),
        ["badge.device = (missing): is required when the evdev badge reader is enabled. Fix: give the reader's /dev/input/by-id/…-event-kbd path"],
        id="evdev-badge-without-device",
    ),
    pytest.param(
        edited(append=MAX7219 + "width = 100\n"),
        ["display.width = 100: must be a multiple of 8 between 8 and 512. Fix: give a multiple of 8 between 8 and 512"],
        id="display-width-not-multiple-of-8",
    ),
    pytest.param(
        edited(append='\n[gpio]\npin_factory = "pigpio"\n'),
        ["gpio.pin_factory = 'pigpio': must be one of auto, lgpio, rpigpio, mock. Fix: use one of auto, lgpio, rpigpio, mock"],
        id="unknown-pin-factory",
    ),
    pytest.param(
        edited(append='\n[store]\npath = "~hall-appliance-no-such-user/hall.db"\n'),
        ["store.path = '~hall-appliance-no-such-user/hall.db': starts with a home directory this system does not have. Fix: give an absolute path"],
        id="path-with-unknown-home",
    ),
    pytest.param(
        edited(append='\n[store]\npath = ""\n'),
        ["store.path = '': must not be empty. Fix: give the database file's path, e.g. '/var/lib/hall-appliance/hall.db'"],
        id="empty-store-path",
    ),
    pytest.param(
        edited(append="\n[ratings]\ncallback_working_days = -1\n"),
        ["ratings.callback_working_days = -1: must be between 0 and 30. Fix: give working days between 0 and 30 (0: the same working day, by closing time)"],
        id="callback-deadline-before-the-rating",
    ),
    pytest.param(
        'windows = ["w1", "w2"]\n\n' + VALID.split("[[windows]]")[0],
        ["windows = ['w1', 'w2']: must be a list of tables. Fix: write each window as a [[windows]] table"],
        id="windows-not-tables",
    ),
]


@pytest.mark.parametrize("text, expected", BROKEN)
def test_broken_config_lists_exactly_its_problems(tmp_path, text, expected):
    path = tmp_path / "appliance.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert problem_lines(caught.value) == expected
    assert_check_config_fails(path, expected)


# The whole file is the problem: the line names the file and carries no value.
FILE_PROBLEMS = [
    pytest.param(
        edited(('id = "hall-01"', "id = hall-01")).encode(),
        ["{path}: is not valid TOML (Invalid value (at line 2, column 6)). Fix: correct the syntax at that line; compare with config/appliance.example.toml"],
        id="not-toml",
    ),
    pytest.param(
        edited(append="[[windows]\n").encode(),
        ["{path}: is not valid TOML (Expected ']]' at the end of an array declaration (at line 20, column 10)). Fix: correct the syntax at that line; compare with config/appliance.example.toml"],
        id="not-toml-late-line",
    ),
    pytest.param(
        VALID.encode("gbk"),  # what a Chinese-locale Windows editor saves by default
        [f"{{path}}: is not UTF-8 text (line 3, byte {VALID.index('测')}). Fix: save the file as UTF-8"],
        id="not-utf-8",
    ),
    pytest.param(None, ["{path}: cannot be read (No such file or directory). Fix: give the path of an existing, readable config file"], id="missing-file"),
    pytest.param("directory", ["{path}: cannot be read (Is a directory). Fix: give the path of an existing, readable config file"], id="directory"),
]


@pytest.mark.parametrize("content, expected", FILE_PROBLEMS)
def test_unreadable_file_is_one_problem_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "appliance.toml"
    if content == "directory":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    expected = [line.format(path=path) for line in expected]
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert problem_lines(caught.value) == expected
    assert_check_config_fails(path, expected)


@pytest.mark.parametrize(
    "content",
    [pytest.param("a = " + "1" * 5000, id="integer-past-python-limit"), pytest.param("a = " + "[" * 5000, id="arrays-nested-too-deep")],
)
def test_toml_that_python_cannot_hold_is_a_config_error(tmp_path, content):
    path = tmp_path / "appliance.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert str(problem).startswith(f"{path}: is not valid TOML (")


def test_utf8_with_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_bytes(VALID.encode("utf-8-sig"))  # older Windows Notepad saves UTF-8 like this
    assert load_config(path).device.hall == "测试政务服务中心"


def test_every_problem_in_a_file_is_listed_at_once(tmp_path):
    text = edited(
        ('"hall-01"', '"Hall_01"'),
        ('host = "mqtt.county.example"', 'host = "mqtt.county.example"\nkeepalvie = 30\nport = "8883"'),
        ("{ satisfied = 17,", "{ satisfed = 17,"),
        ("basically_satisfied = 6,", "basically_satisfied = 27,"),
        ("indicator_pin = 12", "indicator_pin = 10"),
        append=MAX7219,
    )
    path = tmp_path / "appliance.toml"
    path.write_text(text, encoding="utf-8")
    expected = [
        f"device.id = 'Hall_01': is not a valid id. Fix: {ID_FIX}",
        "broker.keepalvie = 30: is not a known key. Fix: did you mean 'keepalive'?",
        "broker.port = '8883': must be a whole number. Fix: give a TCP port from 1 to 65535",
        f"windows[0].buttons.satisfed = 17: 'satisfed' is not a rating level. Fix: did you mean 'satisfied'? levels are: {LEVEL_LIST}",
        "windows[1].buttons.basically_satisfied = 27: GPIO 27 is already used by windows[0].buttons.basically_satisfied. Fix: give every button and indicator its own pin",
        "windows[1].indicator_pin = 10: GPIO 10 belongs to SPI0, which the display uses. Fix: move it off GPIO 7, 8, 9, 10, 11",
    ]
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert len(caught.value.problems) == 6
    assert problem_lines(caught.value) == expected
    assert str(caught.value) == "\n".join(expected)
    assert_check_config_fails(path, expected)


# -- what is not a problem -------------------------------------------------------------------


@pytest.mark.parametrize(
    "display",
    [
        pytest.param("", id="no-display-section"),
        pytest.param('\n[display]\nenabled = false\ndriver = "max7219"\n', id="max7219-disabled"),
        pytest.param('\n[display]\nenabled = true\ndriver = "emulator"\n', id="emulator"),
    ],
)
def test_button_on_spi0_pin_is_fine_when_the_max7219_is_not_in_use(display):
    config = parse_config(tomllib.loads(edited(("{ satisfied = 5,", "{ satisfied = 10,"), append=display)))
    assert ("satisfied", 10) in config.window("w2").buttons


def test_buttons_are_kept_in_scale_order_whatever_the_file_says():
    config = parse_config(tomllib.loads(edited(("{ satisfied = 17, basically_satisfied = 27, dissatisfied = 22 }", "{ dissatisfied = 22, very_satisfied = 4, satisfied = 17 }"))))
    assert config.window("w1").buttons == (("very_satisfied", 4), ("satisfied", 17), ("dissatisfied", 22))


def test_defaults_fill_what_the_file_leaves_out():
    config = parse_config(tomllib.loads(VALID))
    assert config.broker.port == 1883 and config.broker.tls is None
    assert config.broker.username == "hall-01"
    assert config.broker.aggregator_ack is True
    assert config.store.path == Path("/var/lib/hall-appliance/hall.db")
    assert config.gpio.pin_factory == "auto"
    assert config.display.enabled is False
    assert config.badge.enabled is False
    assert config.control.socket == Path("/run/hall-appliance/control.sock")
    assert config.clock.source == "system"


def test_empty_broker_host_means_record_and_queue_only():
    config = parse_config(tomllib.loads(edited(('host = "mqtt.county.example"', 'host = "  "'))))
    assert config.broker.host is None


# -- relative paths --------------------------------------------------------------------------


def test_relative_paths_are_taken_from_the_config_files_directory(tmp_path, monkeypatch):
    etc = tmp_path / "etc"
    etc.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (etc / "appliance.toml").write_text(
        edited(
            ('host = "mqtt.county.example"', 'host = "mqtt.county.example"\npassword_file = "secrets/broker-password"'),
            append=(
                '\n[broker.tls]\nca_file = "secrets/ca.crt"\ncert_file = "/abs/device.crt"\nkey_file = "~/device.key"\n'
                '\n[store]\npath = "data/hall.db"\n'
                '\n[web]\ncert_file = "web.crt"\nkey_file = "web.key"\n'
                '\n[control]\nsocket = "run/control.sock"\n'
            ),
        ),
        encoding="utf-8",
    )
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "elsewhere")

    config = load_config("../etc/appliance.toml")

    here = etc.resolve()
    assert config.broker.password_file == here / "secrets" / "broker-password"
    assert config.broker.tls.ca_file == here / "secrets" / "ca.crt"
    assert config.broker.tls.cert_file == Path("/abs/device.crt")
    assert config.broker.tls.key_file == tmp_path / "home" / "device.key"
    assert config.store.path == here / "data" / "hall.db"
    assert config.web.cert_file == here / "web.crt" and config.web.key_file == here / "web.key"
    assert config.control.socket == here / "run" / "control.sock"
    assert check_config(Path("../etc/appliance.toml"), cwd=tmp_path / "elsewhere").returncode == 0


def test_parse_config_without_a_base_takes_paths_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = parse_config(tomllib.loads(edited(append='\n[store]\npath = "hall.db"\n')))
    assert config.store.path == tmp_path / "hall.db"
    config = parse_config(tomllib.loads(edited(append='\n[store]\npath = "hall.db"\n')), base_dir=Path("/srv/hall"))
    assert config.store.path == Path("/srv/hall/hall.db")


# -- properties ------------------------------------------------------------------------------

ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"
SECTIONS = sorted(KNOWN) + ["windows.buttons"]
KEYS = st.one_of(
    st.sampled_from(sorted(set().union(*KNOWN.values()) | {level.code for level in LEVELS})),
    st.text(max_size=8),
)
TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "~", "~/x", "~hall-appliance-no-such-user/x", "/tmp/x", "x.db", "hall-01", "w1", "max7219", "emulator", "evdev", "simulated", "mock", "system"]),
)
SCALARS = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(min_value=-1, max_value=70000),
    st.floats(),
    TEXT,
    st.datetimes(),
    st.dates(),
    st.times(),
)
TOML_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5), max_leaves=20)
EXAMPLE_DOC = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


def _table_at(doc: dict, section: str, index: int) -> dict | None:
    """The table at ``section`` ("windows" picks a window by ``index``), or None if it is not one."""
    node: object = doc
    for part in filter(None, section.split(".")):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
        if part == "windows":
            if not isinstance(node, list) or not node:
                return None
            node = node[index % len(node)]
    return node if isinstance(node, dict) else None


@st.composite
def nearly_valid_documents(draw) -> dict:
    """The example config with one to four keys set to arbitrary values, or removed."""
    doc = copy.deepcopy(EXAMPLE_DOC)
    for _ in range(draw(st.integers(1, 4))):
        table = _table_at(doc, draw(st.sampled_from(SECTIONS)), draw(st.integers(0, 3)))
        if table is None:
            continue
        key = draw(st.one_of(st.sampled_from(sorted(table) or ["id"]), KEYS))
        if draw(st.booleans()) and key in table:
            del table[key]
        else:
            table[key] = draw(TOML_VALUES)
    return doc


def _only_config_errors(doc: dict) -> None:
    try:
        result = parse_config(doc, base_dir=Path("/etc/hall-appliance"))
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert isinstance(problem, Problem) and isinstance(problem.path, str) and problem.message and problem.fix
        assert str(exc)  # every problem renders
    else:
        assert isinstance(result, Config)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(KEYS, TOML_VALUES, max_size=8))
def test_arbitrary_documents_raise_only_config_error(doc):
    _only_config_errors(doc)


@settings(max_examples=300, deadline=None)
@given(nearly_valid_documents())
@example({**EXAMPLE_DOC, "store": {"path": "~hall-appliance-no-such-user/hall.db"}})
def test_nearly_valid_documents_raise_only_config_error(doc):
    _only_config_errors(doc)


def _with_device_id(device_id: str) -> dict:
    doc = tomllib.loads(VALID)
    doc["device"]["id"] = device_id
    return doc


@settings(max_examples=150, deadline=None)
@given(st.from_regex(r"[a-z0-9][a-z0-9-]{0,62}", fullmatch=True))
@example("a" * 63)
@example("0")
def test_any_well_formed_device_id_is_accepted(device_id):
    config = parse_config(_with_device_id(device_id))
    assert config.device.id == device_id
    assert config.broker.username == device_id


@st.composite
def ids_with_a_foreign_character(draw) -> str:
    prefix = draw(st.text(ID_CHARS, max_size=10))
    foreign = draw(st.characters(exclude_characters=ID_CHARS))
    return prefix + foreign + draw(st.text(ID_CHARS, max_size=10))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ids_with_a_foreign_character())
@example("hall-01\n")
@example("Hall-01")
@example("hall_01")
@example("hall 01")
@example("乌兰-01")
def test_device_id_with_a_foreign_character_is_rejected(device_id):
    with pytest.raises(ConfigError) as caught:
        parse_config(_with_device_id(device_id))
    assert [(p.path, p.value, p.message) for p in caught.value.problems] == [("device.id", device_id, "is not a valid id")]


@pytest.mark.parametrize("device_id", ["", "-hall-01", "a" * 64], ids=["empty", "leading-dash", "64-characters"])
def test_device_id_of_the_wrong_shape_is_rejected(device_id):
    with pytest.raises(ConfigError) as caught:
        parse_config(_with_device_id(device_id))
    assert problem_lines(caught.value) == [f"device.id = {device_id!r}: is not a valid id. Fix: {ID_FIX}"]


# -- the board's motion and brightness --------------------------------------------------------


def test_board_brightness_speed_and_hold_are_read(tmp_path):
    from datetime import time

    path = tmp_path / "a.toml"
    path.write_text(edited(append='\n[display]\nenabled = true\ndriver = "emulator"\nscroll_speed = 48\nhold = 4\nbrightness = { "19:30" = 4, "06:30" = 80 }\n'))
    display = load_config(path).display
    assert (display.scroll_speed, display.hold_s) == (48, 4)
    assert display.brightness_steps() == ((time(6, 30), 80), (time(19, 30), 4))


def test_without_a_brightness_table_the_board_dims_at_night(tmp_path):
    from datetime import time

    path = tmp_path / "a.toml"
    path.write_text(edited(append='\n[display]\nenabled = true\ndriver = "emulator"\ncontrast = 100\n'))
    assert load_config(path).display.brightness_steps() == ((time(7, 0), 100), (time(19, 0), 8))


@pytest.mark.parametrize(
    ("table", "line"),
    [
        ('{ "7:00" = 64 }', "display.brightness.7:00 = 64: '7:00' is not a time written HH:MM. Fix: write e.g. brightness = { \"07:00\" = 64, \"19:00\" = 8 }"),
        ('{ "07:00" = 300 }', "display.brightness.07:00 = 300: must be a whole number from 0 to 255. Fix: give the board's contrast from that time on"),
        ("64", "display.brightness = 64: must be a table of \"HH:MM\" = contrast. Fix: write e.g. brightness = { \"07:00\" = 64, \"19:00\" = 8 }"),
    ],
)
def test_a_bad_brightness_table_is_named(tmp_path, table, line):
    path = tmp_path / "a.toml"
    path.write_text(edited(append=f'\n[display]\nenabled = true\ndriver = "emulator"\nbrightness = {table}\n'))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert problem_lines(exc.value) == [line]
