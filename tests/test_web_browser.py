"""The page in a real browser: headless Chromium (the distribution's) against `hall-appliance simulate`.

Python Playwright drives /usr/bin/chromium; `playwright install` is never run (no download is
possible). A CJK font must be installed or Chinese renders as boxes: `make test` installs
fonts-wqy-zenhei.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.broker import mosquitto_binary
from conftest import REPO

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium; `make test` does)")


@dataclass
class Simulator:
    url: str
    passwords: dict
    config: Path
    proc: subprocess.Popen
    broker: tuple[str, int] | None = None  # the simulator's private Mosquitto, when it started one


@pytest.fixture(scope="module")
def simulator():
    """`hall-appliance simulate` as a newcomer runs it: its own Mosquitto, the page on a free port."""
    state = Path(tempfile.mkdtemp(prefix="hall-sim-"))
    config = state / "sim.toml"
    text = (
        (REPO / "config" / "simulator.toml").read_text()
        .replace('path = "../.sim/hall.db"', f'path = "{state}/hall.db"')
        .replace('socket = "../.sim/control.sock"', f'socket = "{state}/control.sock"')
    )
    # A supervisor key of the test's own, so the complaint box is open.
    from nacl.public import PrivateKey

    from services.complaints import PUBLIC_KEY_TAG, format_key_file

    (state / "complaints.pub").write_text(format_key_file(PUBLIC_KEY_TAG, bytes(PrivateKey.generate().public_key), "browser test"))
    key_line = f'public_key = "{state}/complaints.pub"'
    text = text.replace("[complaints]", f"[complaints]\n{key_line}") if "[complaints]" in text else text + f"\n[complaints]\n{key_line}\n"
    config.write_text(text)
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "simulate", "--config", str(config), "--web-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    lines: list[str] = []
    url, passwords, broker = None, {}, None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "The simulated hall is running" not in "".join(lines):
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if m := re.search(r"The config page: (http://127\.0\.0\.1:\d+/)", line):
            url = m.group(1)
        if m := re.search(r"sign in as (\S+)\s+password (\S+)", line):
            passwords[m.group(1)] = m.group(2)
        if m := re.search(r"private Mosquitto on ([0-9.]+):(\d+)", line):
            broker = (m.group(1), int(m.group(2)))
    try:
        assert url and set(passwords) == {"director", "county-it"}, "".join(lines)
        yield Simulator(url, passwords, config, proc, broker)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def browser(tmp_path):
    """Starts Chromium with a fresh profile: ``browser(**context_options)`` returns a page."""
    fonts = subprocess.run(["fc-list", ":lang=zh-cn", "family"], capture_output=True, text=True).stdout.strip()
    assert fonts, "no font covers Chinese: apt-get install fonts-wqy-zenhei (`make test` does)"
    from playwright.sync_api import sync_playwright

    contexts = []
    with sync_playwright() as p:

        def launch(**options):
            context = p.chromium.launch_persistent_context(
                str(tmp_path / f"profile-{len(contexts)}"),
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                headless=True,
                **({"viewport": {"width": 1280, "height": 900}} | options),
            )
            context.set_default_timeout(10_000)
            contexts.append(context)
            return context.pages[0] if context.pages else context.new_page()

        try:
            yield launch
        finally:
            for context in contexts:
                context.close()


def sign_in(page, sim: Simulator, username: str) -> None:
    page.goto(sim.url)
    assert page.url.startswith(sim.url + "login")
    page.fill("#username", username)
    page.fill("#password", sim.passwords[username])
    page.click("form[action='/login'] button[type=submit]")


def screenshot(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    # A real page, not a blank one: a PNG of an empty white page is a few hundred bytes.
    assert data.startswith(b"\x89PNG") and len(data) > 20_000, len(data)


def test_director_signs_in_reads_the_status_switches_language_and_presses_a_button(simulator, browser, tmp_path):
    from playwright.sync_api import expect

    page = browser()
    sign_in(page, simulator, "director")
    expect(page.locator("h1")).to_have_text("运行状态")
    expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
    expect(page.locator(".brand .hall")).to_have_text("模拟政务服务中心")
    expect(page.get_by_role("heading", name=re.compile("今日评价"))).to_be_visible()
    expect(page.locator("main")).to_contain_text("与旗县区的连接")
    screenshot(page, tmp_path / "status-zh.png")

    page.click("form.languages button[value=en]")
    expect(page.locator("h1")).to_have_text("Status")
    expect(page.locator("html")).to_have_attribute("lang", "en")

    page.click("nav >> text=Simulator")
    expect(page.locator("h1")).to_have_text("Simulator")
    events = page.locator("#sim-events")
    expect(events).not_to_contain_text("Very satisfied")
    page.click("button[data-window=w1][data-level=very_satisfied]")
    expect(page.locator(".flash")).to_have_text("Pressed “Very satisfied” at w1.")
    press = events.locator("tbody tr", has_text="综合受理窗口 · Very satisfied")
    expect(press).to_have_count(1)
    # The simulator's private Mosquitto takes it, and the panel's own refresh shows it; with
    # no Mosquitto installed the press waits in the outbox.
    expect(press).to_contain_text("delivered" if mosquitto_binary() else "waiting to be sent", timeout=15_000)

    # A press from elsewhere (the CLI) appears without reloading the page.
    page.evaluate("window.notReloaded = true")
    r = subprocess.run([sys.executable, "-m", "appliance.cli", "sim", "--config", str(simulator.config), "press", "w2", "satisfied"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    expect(events).to_contain_text("社保医保窗口 · Satisfied", timeout=10_000)
    assert page.evaluate("window.notReloaded") is True
    screenshot(page, tmp_path / "simulator-en.png")

    page.click("nav >> text=Status")
    expect(page.locator("table.figures")).to_contain_text("综合受理窗口")
    first_window = page.locator("table.figures tbody tr").first
    assert int(first_window.locator("td.total").inner_text()) >= 1


def test_county_it_on_a_phone_changes_a_setting_without_sideways_scrolling(simulator, browser, tmp_path):
    from playwright.sync_api import expect

    page = browser(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    sign_in(page, simulator, "county-it")
    expect(page.locator("h1")).to_have_text("运行状态")
    for path in ("/", "/settings", "/simulator", "/board", "/board/new"):
        page.goto(simulator.url.rstrip("/") + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (path, overflow)
    page.goto(simulator.url + "settings")
    page.fill("#status_interval-value", "5")
    page.click("#setting-status_interval button[type=submit]")
    expect(page.locator("#status_interval-value-error")).to_have_text("status_interval = 5：必须在 10 到 3600 之间。修改方法：填写 10 到 3600 之间的整数")
    page.fill("#status_interval-value", "120")
    page.click("#setting-status_interval button[type=submit]")
    expect(page.locator(".flash")).to_contain_text("status_interval 现在是 120。后台服务已开始使用。")
    screenshot(page, tmp_path / "settings-phone.png")


def led_dots(png: bytes, width: int = 128, height: int = 16, scale: int = 4):
    """Which LEDs are lit in the emulator's picture of the board (one dot per ``scale`` pixels)."""
    import io

    from PIL import Image

    picture = Image.open(io.BytesIO(png)).convert("RGB")
    assert picture.size == (width * scale, height * scale), picture.size
    dots = Image.new("1", (width, height))
    for y in range(height):
        for x in range(width):
            # An unlit LED is (52, 14, 10); a lit one is far redder at any brightness.
            dots.putpixel((x, y), 1 if picture.getpixel((x * scale + 1, y * scale + 1))[0] > 100 else 0)
    return dots


def shown_image(page, selector: str) -> bytes:
    """The picture an <img> shows right now, as the browser decoded it (a PNG drawn through a canvas)."""
    import base64

    data_url = page.evaluate(
        """(selector) => {
          const img = document.querySelector(selector);
          if (!img || !img.complete || !img.naturalWidth) return null;
          const canvas = document.createElement("canvas");
          canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
          canvas.getContext("2d").drawImage(img, 0, 0);
          return canvas.toDataURL("image/png");
        }""",
        selector,
    )
    return base64.b64decode(data_url.split(",", 1)[1]) if data_url else b""


def test_director_adds_a_board_item_with_a_preview_and_the_simulators_frame_changes_after_a_press(simulator, browser, tmp_path):
    from playwright.sync_api import expect

    from services.board import THANKS_TEXT, Font, Renderer

    page = browser()
    sign_in(page, simulator, "director")
    page.click("form.languages button[value=zh_Hans]")  # another test may have left the account in English
    page.click("nav >> text=LED 显示屏")
    expect(page.locator("h1")).to_have_text("LED 显示屏")
    expect(page.locator("#live-board")).to_be_visible()

    page.click("text=新增内容")
    expect(page.locator("h1")).to_have_text("新增显示屏内容")
    page.select_option("#kind", "announcement")
    page.fill("#text", "周五下午停电检修")
    page.fill("#schedule", "08:00-12:00, 12:00-08:30")
    page.click("button[value=preview]")
    expect(page.locator("#schedule-error")).to_have_text("12:00-08:30 的结束时间早于开始时间。")
    page.fill("#schedule", "")
    page.click("button[value=preview]")
    preview = page.locator("#preview img")
    expect(preview).to_be_visible()
    assert page.evaluate("document.querySelector('#preview img').naturalWidth") == 128  # one PNG pixel per LED
    expect(page.locator("#preview")).to_contain_text("屏幕放得下：居中显示 6 秒。")
    screenshot(page, tmp_path / "board-preview.png")
    page.click("button[value=save]")
    expect(page.locator(".flash")).to_contain_text("已加入本大厅内容")
    expect(page.locator(".flash")).to_contain_text("屏幕已更新。")
    expect(page.locator("#hall-items tbody")).to_contain_text("周五下午停电检修")
    screenshot(page, tmp_path / "board-list.png")

    # The simulator's board frame, before and after a press: the thank-you comes up.
    page.click("nav >> text=模拟器")
    board = page.locator("#sim-board")
    expect(board).to_be_visible()
    page.wait_for_function("document.getElementById('sim-board').complete && document.getElementById('sim-board').naturalWidth > 0")
    before = shown_image(page, "#sim-board")
    assert before.startswith(b"\x89PNG")
    page.click("button[data-window=w1][data-level=satisfied]")
    expect(page.locator(".flash")).to_be_visible()
    thanks = Renderer(Font(), 128, 16).strip(THANKS_TEXT).tape
    deadline = time.monotonic() + 3
    after = b""
    while time.monotonic() < deadline:
        after = shown_image(page, "#sim-board")
        if after and after != before and led_dots(after).tobytes() == thanks.tobytes():
            break
        time.sleep(0.05)
    assert after != before, "the board's frame did not change after the press"
    assert led_dots(after).tobytes() == thanks.tobytes(), "the board did not show the thank-you"


def test_citizen_makes_a_complaint_on_a_phone_keeps_the_receipt_and_looks_it_up(simulator, browser, tmp_path):
    from playwright.sync_api import expect

    page = browser(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    refused = []  # anything the page's CSP blocked (an inline style or script would be)
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(simulator.url + "ts")
    expect(page.locator("h1")).to_have_text("对本大厅的意见投诉")
    expect(page.locator("#privacy")).to_contain_text("默认匿名")
    expect(page.locator("nav")).to_have_count(0)  # a citizen is not signed in
    page.select_option("#category", "runaround")
    page.select_option("#window", "w1")
    page.fill("#text", "办理营业执照，材料没有一次性告知，跑了三趟。")
    expect(page.locator("[data-counter-for=text]")).to_have_text("22 / 2000")
    page.click("form.complaint-form button[type=submit]")

    code = page.locator("#receipt-code")
    expect(code).to_be_visible()
    receipt = code.inner_text().strip()
    assert re.fullmatch(r"[2-9A-HJKMNP-TV-Z]{4}-[2-9A-HJKMNP-TV-Z]{4}-[2-9A-HJKMNP-TV-Z]{4}", receipt), receipt
    expect(page.locator(".keep")).to_contain_text("请保存回执码")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, overflow
    screenshot(page, tmp_path / "complaint-receipt.png")

    page.click("text=查询办理情况")
    expect(page.locator("h1")).to_have_text("查询投诉办理情况")
    page.fill("#code", receipt.replace("-", " ").lower())  # as read off a photo
    page.click("form[action='/ts/receipt'] button[type=submit]")
    expect(page.locator("#status")).to_contain_text("已受理")
    expect(page.locator("#status")).to_contain_text("反复跑腿")
    expect(page.locator("#status h2")).to_have_text(f"投诉 {receipt}")
    # The only cookie is the session holding the form's token; no sign-in happened.
    assert [c["name"] for c in page.context.cookies()] == ["hall_session"]
    assert refused == []
