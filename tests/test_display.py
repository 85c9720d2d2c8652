"""The LED board driver: the bytes a MAX7219 chain receives, and the emulator's pictures.

Expectations come from the MAX7219 datasheet, not from the code under test:

- every write is a 16-bit frame, register address then data, shifted into the chain; after
  N frames the chip select rises and each chip latches the frame it holds. The first frame
  shifted in has travelled to the far end, so the *last* two bytes of a transfer are the ones
  the module nearest the Pi keeps ("Cascading Drivers", No-Op register);
- registers 0x01–0x08 are digits 0–7, 0x09 decode mode, 0x0A intensity (16 steps),
  0x0B scan limit, 0x0C shutdown (0 = off), 0x0F display test;
- in no-decode mode each data bit drives one segment line directly.

On a generic 8×8 module with ``block_orientation = 0`` (luma's convention) digit ``n`` drives
column ``n`` from the left and data bit ``b`` row ``b`` from the top. Where each module sits
is the wiring ``module_order`` describes (docs/board.md).
"""

from __future__ import annotations

import io
import random

import pytest
from luma.led_matrix.device import max7219
from PIL import Image

from images import assert_matches_reference

from appliance import config as config_module
from appliance.config import DisplayConfig
from drivers.display import (
    MODULE_ORDERS,
    BadFrame,
    ChainedMax7219,
    DisplayUnavailable,
    EmulatedBoard,
    Max7219Board,
    RecordingSerial,
    gif_of,
    led_picture,
    make_display,
    terminal_view,
)

# luma.led_matrix 1.9 calls Image.getdata(), which Pillow 13 deprecates (DESIGN: known pitfall).
pytestmark = pytest.mark.filterwarnings("ignore:Image.Image.getdata is deprecated:DeprecationWarning")

DIGIT = {c: 0x01 + c for c in range(8)}
DECODE_MODE, INTENSITY, SCAN_LIMIT, SHUTDOWN, DISPLAY_TEST = 0x09, 0x0A, 0x0B, 0x0C, 0x0F


# -- reading the chain the way the chips do ------------------------------------------------------


def latched(transfer: bytes, modules: int) -> list[tuple[int, int]]:
    """(register, value) each module latches from one transfer; index 0 is nearest the Pi."""
    assert len(transfer) == 2 * modules, f"a latch of {modules} modules is {2 * modules} bytes, got {len(transfer)}"
    frames = [(transfer[i], transfer[i + 1]) for i in range(0, len(transfer), 2)]
    return frames[::-1]


def registers(serial: RecordingSerial, modules: int) -> list[dict[int, int]]:
    """Every module's registers after all the transfers so far."""
    regs: list[dict[int, int]] = [{} for _ in range(modules)]
    for transfer in serial.transfers():
        for k, (register, value) in enumerate(latched(transfer, modules)):
            regs[k][register] = value
    return regs


def placement(k: int, width: int, order: str) -> tuple[int, int, bool]:
    """Where module k (0 nearest the Pi) sits on the board: (column, row, upside down).

    The chain fills the top row first. ``*_reversed`` enters that row at its right end; in a
    snake every second row is a board turned round, so it is upside down and runs the other way.
    """
    n = width // 8
    row, j = divmod(k, n)
    upside_down = order.startswith("snake") and row % 2 == 1
    right_to_left = order.endswith("reversed") != upside_down
    return (n - 1 - j if right_to_left else j), row, upside_down


def what_the_board_shows(serial: RecordingSerial, width: int, height: int, order: str = "rows") -> Image.Image:
    """The picture the LEDs make, rebuilt from each module's digit registers and its place."""
    modules = (width // 8) * (height // 8)
    picture = Image.new("1", (width, height))
    for k, regs in enumerate(registers(serial, modules)):
        column, row, upside_down = placement(k, width, order)
        for digit in range(8):
            for bit in range(8):
                if regs.get(DIGIT[digit], 0) >> bit & 1:
                    x, y = (7 - digit, 7 - bit) if upside_down else (digit, bit)
                    picture.putpixel((8 * column + x, 8 * row + y), 1)
    return picture


def board(width: int, height: int, order: str = "rows", **kwargs) -> tuple[Max7219Board, RecordingSerial]:
    serial = RecordingSerial()
    return Max7219Board(width, height, serial_interface=serial, module_order=order, **kwargs), serial


def single_pixel(width: int, height: int, x: int, y: int) -> Image.Image:
    image = Image.new("1", (width, height))
    image.putpixel((x, y), 1)
    return image


def random_picture(width: int, height: int, seed: int) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("1", (width, height))
    image.putdata([rng.random() < 0.4 for _ in range(width * height)])
    return image


# -- the MAX7219 chain --------------------------------------------------------------------------


def test_the_config_and_the_driver_know_the_same_module_orders():
    assert config_module.MODULE_ORDERS == MODULE_ORDERS


def test_a_two_row_chain_is_set_up_register_by_register_in_every_module():
    _, serial = board(32, 16, contrast=64)
    transfers = serial.transfers()
    assert all(kind == "data" for kind, _ in serial.calls)
    # 32×16 is two rows of four modules; each latch writes one register in all eight: 16 bytes.
    assert [latched(t, 8) for t in transfers] == [
        [(SCAN_LIMIT, 7)] * 8,  # show all eight digits
        [(DECODE_MODE, 0)] * 8,  # no BCD decoding: bits drive LEDs
        [(DISPLAY_TEST, 0)] * 8,  # leave a test mode a glitch may have left on
        [(INTENSITY, 64 >> 4)] * 8,
        *[[(DIGIT[d], 0)] * 8 for d in range(8)],  # blank
        [(SHUTDOWN, 1)] * 8,  # and wake up
    ]


@pytest.mark.parametrize(
    ("x", "y", "module", "register", "value"),
    [
        (0, 0, 0, DIGIT[0], 0b00000001),  # top-left LED: first module, digit 0, bit 0
        (9, 2, 1, DIGIT[1], 0b00000100),  # second module on the top row
        (31, 7, 3, DIGIT[7], 0b10000000),  # last module of the top row
        (0, 8, 16, DIGIT[0], 0b00000001),  # the second row starts again at the left, module 16
        (127, 15, 31, DIGIT[7], 0b10000000),  # bottom-right: the far end of the chain
    ],
)
def test_a_128x16_chain_in_rows_puts_each_pixel_in_its_module(x, y, module, register, value):
    display, serial = board(128, 16)
    serial.clear()
    display.show(single_pixel(128, 16, x, y))
    transfers = serial.transfers()
    assert len(transfers) == 8 and all(len(t) == 64 for t in transfers)  # one latch per digit
    lit = [(k, reg, val) for k, regs in enumerate(registers(serial, 32)) for reg, val in regs.items() if val]
    assert lit == [(module, register, value)]


@pytest.mark.parametrize(
    ("width", "order", "x", "y", "module", "register", "value"),
    [
        # 16×16: two rows of two modules (0 1 / 2 3 in "rows").
        (16, "rows", 0, 8, 2, DIGIT[0], 0x01),  # back to the left end of the bottom row
        (16, "snake", 15, 8, 2, DIGIT[0], 0x80),  # bottom right is module 2, upside down: its (0, 7)
        (16, "snake", 0, 15, 3, DIGIT[7], 0x01),  # bottom left is the last; (0, 7) turned is (7, 0)
        # 32×16: two rows of four modules.
        (32, "rows", 0, 8, 4, DIGIT[0], 0x01),
        (32, "rows_reversed", 0, 0, 3, DIGIT[0], 0x01),  # the chain enters at the top right
        (32, "rows_reversed", 31, 15, 4, DIGIT[7], 0x80),  # …and each row runs right to left
        (32, "snake", 31, 8, 4, DIGIT[0], 0x80),
        (32, "snake", 0, 15, 7, DIGIT[7], 0x01),
        (32, "snake_reversed", 0, 8, 4, DIGIT[7], 0x80),  # bottom row runs left to right, upside down
    ],
)
def test_a_two_row_chain_follows_its_wiring(width, order, x, y, module, register, value):
    display, serial = board(width, 16, order)
    serial.clear()
    display.show(single_pixel(width, 16, x, y))
    lit = [(k, reg, val) for k, regs in enumerate(registers(serial, width // 4)) for reg, val in regs.items() if val]
    assert lit == [(module, register, value)]


@pytest.mark.parametrize("order", MODULE_ORDERS)
@pytest.mark.parametrize("size", [(32, 16), (128, 16), (64, 24)], ids=["32x16", "128x16", "64x24"])
def test_the_board_shows_the_picture_it_was_given(order, size):
    width, height = size
    display, serial = board(width, height, order)
    picture = random_picture(width, height, seed=width + height + len(order))
    display.show(picture)
    assert what_the_board_shows(serial, width, height, order).tobytes() == picture.tobytes()


@pytest.mark.parametrize("order", MODULE_ORDERS)
@pytest.mark.parametrize("block_orientation", [0, 90, -90, 180])
@pytest.mark.parametrize("rotate", [0, 1, 2, 3])
def test_the_bytes_are_the_ones_luma_itself_would_send(order, block_orientation, rotate):
    # luma's own display() walks the blocks in its _offsets (farthest module first); given
    # the order this wiring claims, it is the reference for our faster packing.
    for width, height in [(32, 16), (16, 24), (8, 8)]:
        ours_serial, lumas_serial = RecordingSerial(), RecordingSerial()
        settings = dict(width=width, height=height, module_order=order, block_orientation=block_orientation, rotate=rotate)
        ours, lumas = ChainedMax7219(ours_serial, **settings), ChainedMax7219(lumas_serial, **settings)
        n = width // 8
        farthest_first = [(k // n, n - 1 - k % n if order.endswith("reversed") else k % n) for k in range(n * (height // 8))][::-1]
        lumas._offsets = [8 * row * width + 8 * column for row, column in farthest_first]
        for seed in range(3):
            picture = random_picture(ours.width, ours.height, seed=seed)
            ours_serial.clear()
            lumas_serial.clear()
            ours.display(picture)
            max7219.display(lumas, picture)
            assert ours_serial.transfers() == lumas_serial.transfers(), (width, height, seed)


def test_showing_does_not_touch_the_callers_picture():
    display, _ = board(32, 16, "snake")
    picture = random_picture(32, 16, seed=7)
    before = picture.tobytes()
    display.show(picture)
    assert picture.tobytes() == before


def test_fc16_modules_take_a_quarter_turn_per_module():
    # block_orientation = -90 (FC-16 boards): luma turns each 8×8 block clockwise, so the
    # pixel (x, y) of a module lands on digit 7 - y, bit x.
    display, serial = board(16, 8, block_orientation=-90)
    serial.clear()
    display.show(single_pixel(16, 8, 1, 0))
    lit = [(k, reg, val) for k, regs in enumerate(registers(serial, 2)) for reg, val in regs.items() if val]
    assert lit == [(0, DIGIT[7], 0b00000010)]


def test_the_same_frame_twice_is_sent_once():
    display, serial = board(32, 16)
    picture = random_picture(32, 16, seed=1)
    display.show(picture)
    serial.clear()
    display.show(picture)
    assert serial.calls == []


def test_contrast_and_blank_send_only_changes():
    display, serial = board(32, 16, contrast=64)
    serial.clear()
    display.set_contrast(64)
    display.set_contrast(200)
    display.set_contrast(200)
    display.blank(True)
    display.blank(True)
    display.blank(False)
    assert [latched(t, 8) for t in serial.transfers()] == [
        [(INTENSITY, 200 >> 4)] * 8,
        [(SHUTDOWN, 0)] * 8,
        [(SHUTDOWN, 1)] * 8,
    ]


def test_resync_sends_the_setup_and_the_frame_again():
    display, serial = board(32, 16, contrast=128)
    picture = random_picture(32, 16, seed=3)
    display.show(picture)
    display.blank(True)
    serial.clear()
    display.resync()
    first = [latched(t, 8)[0] for t in serial.transfers()[:5]]
    assert first == [(SCAN_LIMIT, 7), (DECODE_MODE, 0), (DISPLAY_TEST, 0), (INTENSITY, 8), (SHUTDOWN, 0)]
    assert what_the_board_shows(serial, 32, 16).tobytes() == picture.tobytes()


@pytest.mark.parametrize(
    ("picture", "message"),
    [
        (Image.new("1", (64, 16)), "a frame must be a 1-bit image of 32×16, got mode 1 64×16"),
        (Image.new("L", (32, 16)), "a frame must be a 1-bit image of 32×16, got mode L 32×16"),
    ],
)
def test_a_wrong_frame_is_refused(picture, message):
    display, _ = board(32, 16)
    with pytest.raises(BadFrame) as err:
        display.show(picture)
    assert str(err.value) == message


@pytest.mark.parametrize("level", [-1, 256, 1.5, True])
def test_contrast_out_of_range_is_refused(level):
    display, _ = board(32, 16)
    with pytest.raises(ValueError, match="contrast must be a whole number from 0 to 255"):
        display.set_contrast(level)


def test_close_blanks_and_releases_the_spi_device():
    display, serial = board(32, 16)
    serial.clear()
    display.close()
    assert latched(serial.transfers()[0], 8) == [(SHUTDOWN, 0)] * 8
    assert serial.cleaned_up


# -- make_display ------------------------------------------------------------------------------


def display_config(**overrides) -> DisplayConfig:
    values = dict(enabled=True, driver="max7219", width=128, height=16, spi_port=0, spi_device=0, block_orientation=0, rotate=0, contrast=64, module_order="rows")
    values.update(overrides)
    return DisplayConfig(**values)


def test_make_display_builds_the_chain_the_config_describes():
    serial = RecordingSerial()
    display = make_display(display_config(width=32, module_order="snake", contrast=160), serial_interface=serial)
    assert isinstance(display, Max7219Board)
    assert (display.width, display.height) == (32, 16)
    assert latched(serial.transfers()[3], 8) == [(INTENSITY, 10)] * 8
    serial.clear()
    display.show(single_pixel(32, 16, 0, 15))
    lit = [(k, reg, val) for k, regs in enumerate(registers(serial, 8)) for reg, val in regs.items() if val]
    assert lit == [(7, DIGIT[7], 0x01)]


def test_make_display_without_spi_says_how_to_enable_it():
    # This machine has no /dev/spidev0.1 (nor, usually, the spidev module).
    with pytest.raises(DisplayUnavailable, match=r"/dev/spidev0\.1 cannot be opened .*enable SPI"):
        make_display(display_config(spi_device=1))


def test_make_display_gives_the_emulator():
    display = make_display(display_config(driver="emulator", rotate=1, width=32, height=16))
    assert isinstance(display, EmulatedBoard)
    assert (display.width, display.height) == (16, 32)


# -- the emulator and its pictures -------------------------------------------------------------


def test_the_emulator_keeps_each_new_frame_once():
    display = EmulatedBoard(32, 16)
    a, b = random_picture(32, 16, 1), random_picture(32, 16, 2)
    for picture in (a, a, b, b, a):
        display.show(picture)
    assert list(display.frames) == [a, b, a]
    assert display.frame is a


def png_pixels(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.convert("RGB")


def test_frame_png_draws_each_led_as_a_dot_four_times_larger():
    display = EmulatedBoard(16, 16, contrast=255)
    display.show(single_pixel(16, 16, 2, 1))
    picture = png_pixels(display.frame_png())
    assert picture.size == (64, 64)
    lit, unlit, gap = picture.getpixel((2 * 4 + 1, 1 * 4 + 1)), picture.getpixel((1, 1)), picture.getpixel((3, 3))
    assert lit[0] > 200 and unlit[0] < 80 and gap == (12, 12, 12)
    # Exactly one LED is lit: as many pixels of the lit colour as one dot has.
    one = EmulatedBoard(1, 1, contrast=255)
    one.show(single_pixel(1, 1, 0, 0))
    dot = sum(1 for p in png_pixels(one.frame_png()).getdata() if p == lit)
    assert dot >= 5
    assert sum(1 for p in picture.getdata() if p == lit) == dot


def test_frame_png_is_dark_when_blanked_and_dimmer_at_low_contrast():
    display = EmulatedBoard(8, 8, contrast=255)
    display.show(single_pixel(8, 8, 0, 0))
    bright = png_pixels(display.frame_png()).getpixel((1, 1))
    display.set_contrast(0)
    dim = png_pixels(display.frame_png()).getpixel((1, 1))
    display.blank(True)
    dark = png_pixels(display.frame_png()).getpixel((1, 1))
    assert bright[0] > dim[0] > dark[0]
    assert dark == png_pixels(display.frame_png()).getpixel((5, 5))  # lit like any unlit LED


def test_terminal_view_draws_two_rows_per_line():
    image = Image.new("1", (4, 4))
    for xy in [(0, 0), (1, 1), (2, 0), (2, 1), (3, 3)]:
        image.putpixel(xy, 1)
    assert terminal_view(image) == "▀▄█ \n   ▄"


def test_gif_of_a_pass_merges_still_frames_and_keeps_the_time():
    a, b = single_pixel(8, 8, 0, 0), single_pixel(8, 8, 1, 0)
    data = gif_of([a, a, a, b, a.copy()], fps=10)
    gif = Image.open(io.BytesIO(data))
    assert gif.format == "GIF" and gif.n_frames == 3 and gif.info.get("loop") == 0
    durations = []
    for i in range(gif.n_frames):
        gif.seek(i)
        durations.append(gif.info["duration"])
    assert durations == [300, 100, 100]
    assert gif.size == (32, 32)


def test_led_picture_matches_its_reference():
    # A fixed pattern (each module's index in binary, plus a frame) drawn as LEDs.
    image = Image.new("1", (32, 16))
    for k in range(8):
        for bit in range(3):
            if k >> bit & 1:
                image.putpixel((8 * (k % 4) + 2 + 2 * bit, 8 * (k // 4) + 3), 1)
    for x in range(32):
        image.putpixel((x, 0), 1)
    assert_matches_reference(led_picture(image, scale=4, contrast=64), "led_picture_32x16.png")
