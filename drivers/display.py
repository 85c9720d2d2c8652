"""The LED board: a chain of MAX7219 8×8 modules through luma.led_matrix, or an emulator.

``make_display(config)`` is the one place that chooses. Both boards take finished 1-bit frames
(the board service renders and crops them) and keep the last one, so the simulator page and
the terminal can show what the hall sees: ``frame_png()`` draws it as LEDs, ``gif_of()`` makes
an animated GIF of a pass, ``terminal_view()`` draws it with block characters.

The MAX7219 driver is luma's ``max7219`` with the wiring of a multi-row chain added (see
``MODULE_ORDERS``); tests check it by the bytes it writes to a ``RecordingSerial``.
"""

from __future__ import annotations

import io
import logging
from collections import deque
from functools import lru_cache
from operator import itemgetter
from typing import Callable, Iterable, Protocol, Sequence

from PIL import Image, ImageChops, ImageDraw
from luma.led_matrix.device import max7219

log = logging.getLogger(__name__)

# How the chain runs through the modules, seen from the front (docs/board.md has drawings).
# The Pi always feeds the top row first.
#   rows            every row runs left to right; the cable from the top row's right end goes
#                   back to the left end of the next row (luma's own order)
#   rows_reversed   every row runs right to left (the chain enters at the top right)
#   snake           the top row runs left to right, the next row right to left, mounted upside
#                   down (a 4-in-1 board turned round so its input meets the row above's output)
#   snake_reversed  as snake, starting at the top right
MODULE_ORDERS = ("rows", "rows_reversed", "snake", "snake_reversed")

# MAX7219 registers (datasheet table 2): digit 0 (digits 0–7 follow), decode mode, intensity,
# scan limit, shutdown, display test.
REG_DIGIT_0 = 0x01
REG_DECODE_MODE = 0x09
REG_INTENSITY = 0x0A
REG_SCAN_LIMIT = 0x0B
REG_SHUTDOWN = 0x0C
REG_DISPLAY_TEST = 0x0F


class DisplayError(Exception):
    """Root of the board driver's errors."""


class DisplayUnavailable(DisplayError, RuntimeError):
    """The board's hardware (the SPI device) cannot be opened."""


class BadFrame(DisplayError, ValueError):
    """A frame is not a 1-bit image of the board's size."""


class Board(Protocol):
    """What the daemon drives: a board of ``width`` × ``height`` LEDs."""

    width: int
    height: int

    def show(self, image: Image.Image) -> None: ...

    def set_contrast(self, level: int) -> None: ...

    def blank(self, on: bool) -> None: ...

    def frame_png(self, scale: int = 4) -> bytes: ...

    def resync(self) -> None: ...

    def close(self) -> None: ...


# -- the test instrument ------------------------------------------------------------------------


class RecordingSerial:
    """A luma serial interface that keeps every ``command()`` and ``data()`` call, in order.

    With luma's ``spi`` each ``data()`` call is one SPI transfer, so one latch of the chain (the
    chip select rises at its end); ``transfers()`` gives those payloads for a test to decode.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.cleaned_up = False

    def command(self, *cmd: int) -> None:
        self.calls.append(("command", bytes(cmd)))

    def data(self, data: Iterable[int]) -> None:
        self.calls.append(("data", bytes(data)))

    def cleanup(self) -> None:
        self.cleaned_up = True

    def transfers(self) -> list[bytes]:
        """Every payload written, oldest first (commands included: MAX7219 has no D/C line)."""
        return [payload for _, payload in self.calls]

    def clear(self) -> None:
        self.calls.clear()


# -- the MAX7219 chain --------------------------------------------------------------------------


class ChainedMax7219(max7219):
    """luma's ``max7219`` for chains of one or more rows wired as ``module_order`` says.

    luma's constructor, preprocessing (``rotate``, ``block_orientation``), ``contrast``,
    ``show``/``hide`` and serial interface are used as they are. Two things are added:

    - the wiring: luma sends the module nearest the Pi the top-left block and goes on row by
      row, left to right; its ``blocks_arranged_in_reverse_order`` only works for one row.
      Here each module's block is chosen once, at start, from ``module_order``, and an
      upside-down row of a snake is turned round in ``preprocess`` (one crop and paste per
      such row);
    - the packing: luma 1.9 reads the frame pixel by pixel through ``Image.getdata()`` (some
      2,000 Python steps a frame on a 128×16 board, and a method Pillow 13 deprecates and
      Pillow 14 removes). Here Pillow turns the frame so each module column is a byte, and one
      precomputed ``itemgetter`` per digit register picks the bytes in chain order. The bytes
      sent are luma's own, bit for bit: tests compare them with luma's ``display()``.
    """

    def __init__(self, serial_interface, *, width: int, height: int, module_order: str = "rows", **kwargs) -> None:
        if module_order not in MODULE_ORDERS:
            raise ValueError(f"module_order {module_order!r} must be one of {', '.join(MODULE_ORDERS)}")
        self.module_order = module_order
        self._digits = _digit_packing(width, height, module_order)
        # luma clears the chain from its constructor: blank, so no row needs turning yet.
        self._upside_down_rows: list[int] = []
        # width and height, never cascaded=: cascaded forces a single row (height 8).
        super().__init__(serial_interface, width=width, height=height, **kwargs)
        self._upside_down_rows = [r for r in range(height // 8) if module_order.startswith("snake") and r % 2 == 1]

    def preprocess(self, image: Image.Image) -> Image.Image:
        source = image
        image = super().preprocess(image)
        if self._upside_down_rows:
            if image is source:  # luma hands the caller's image back when it has nothing to do
                image = image.copy()
            for r in self._upside_down_rows:
                box = (0, 8 * r, self._w, 8 * r + 8)
                image.paste(image.crop(box).transpose(Image.Transpose.ROTATE_180), box)
        return image

    def display(self, image: Image.Image) -> None:
        """Send a 1-bit frame: eight latches, one per digit register, each to every module."""
        if image.mode != self.mode or image.size != self.size:
            raise BadFrame(f"a frame must be a 1-bit image of {self.width}×{self.height}, got mode {image.mode} {image.size[0]}×{image.size[1]}")
        # Turned a quarter clockwise, pixel column x becomes byte row x, top pixel in bit 0.
        columns = self.preprocess(image).transpose(Image.Transpose.ROTATE_270).tobytes()
        for latch, pick in self._digits:
            latch[1::2] = pick(columns)
            self.data(bytes(latch))


def chain_blocks(width: int, height: int, module_order: str) -> list[tuple[int, int]]:
    """(row, column) of the block each module shows, nearest the Pi first.

    The chain fills the top row first; in a ``*_reversed`` order a row runs right to left. The
    upside-down rows of a snake run the other way too, but ``preprocess`` has already turned
    them round, so here they look like the rows above them.
    """
    n = width // 8
    blocks = []
    for k in range(n * (height // 8)):
        row, j = divmod(k, n)
        blocks.append((row, n - 1 - j if module_order.endswith("reversed") else j))
    return blocks


def _digit_packing(width: int, height: int, module_order: str) -> list[tuple[bytearray, Callable[[bytes], Sequence[int]]]]:
    """For each digit register: a latch buffer with its register bytes set, and the picker of its data bytes.

    The first 16 bits shifted into a MAX7219 chain end up in its last module, so a latch lists
    the farthest module first. In the frame turned a quarter clockwise, byte row x holds pixel
    column x, ``height // 8`` bytes from the bottom band up, each with its band's top pixel in
    bit 0 — the byte luma puts in digit register ``x % 8 + 1`` of the module showing that column.
    """
    bands = height // 8
    farthest_first = chain_blocks(width, height, module_order)[::-1]
    packing = []
    for digit in range(8):
        picks = [(8 * column + digit) * bands + (bands - 1 - row) for row, column in farthest_first]
        latch = bytearray(2 * len(picks))
        latch[0::2] = bytes([REG_DIGIT_0 + digit]) * len(picks)
        pick = itemgetter(*picks) if len(picks) > 1 else (lambda data, i=picks[0]: (data[i],))
        packing.append((latch, pick))
    return packing


class _KeptFrame:
    """What both boards share: the last frame, the contrast and the blank state, for the page."""

    def __init__(self, width: int, height: int, contrast: int) -> None:
        self.width = width
        self.height = height
        self.contrast = _check_contrast(contrast)
        self.blanked = False
        self.frame = Image.new("1", (width, height))

    def _check(self, image: Image.Image) -> None:
        if image.mode != "1" or image.size != (self.width, self.height):
            raise BadFrame(f"a frame must be a 1-bit image of {self.width}×{self.height}, got mode {image.mode} {image.size[0]}×{image.size[1]}")

    def frame_png(self, scale: int = 4) -> bytes:
        """The last frame as the hall sees it (dark when blanked), as a PNG scaled ``scale`` times."""
        picture = led_picture(self.frame, scale=scale, contrast=self.contrast, lit=not self.blanked)
        out = io.BytesIO()
        picture.save(out, format="PNG", optimize=False)
        return out.getvalue()


class Max7219Board(_KeptFrame):
    """A MAX7219 chain on SPI; every call sends only what changed."""

    def __init__(
        self,
        width: int,
        height: int,
        *,
        serial_interface,
        block_orientation: int = 0,
        rotate: int = 0,
        module_order: str = "rows",
        contrast: int = 64,
    ) -> None:
        self.device = ChainedMax7219(
            serial_interface,
            width=width,
            height=height,
            rotate=rotate,
            block_orientation=block_orientation,
            module_order=module_order,
            contrast=_check_contrast(contrast),
        )
        super().__init__(self.device.width, self.device.height, contrast)

    def show(self, image: Image.Image) -> None:
        """Send a frame; the same image object twice in a row is sent once."""
        if image is self.frame:
            return
        self.device.display(image)  # checks the mode and size
        self.frame = image

    def set_contrast(self, level: int) -> None:
        """Brightness 0–255; the MAX7219 has 16 steps (level >> 4), and 0 is dim, not off."""
        level = _check_contrast(level)
        if level != self.contrast:
            self.device.contrast(level)
            self.contrast = level

    def blank(self, on: bool) -> None:
        """Shut the chain down (the LEDs go dark, the frame stays in the chips) or wake it."""
        if bool(on) != self.blanked:
            if on:
                self.device.hide()
            else:
                self.device.show()
            self.blanked = bool(on)

    def resync(self) -> None:
        """Send the whole setup and the last frame again.

        A long chain on a noisy supply can drop a chip into test mode or shutdown (the
        MAX7219 keeps its registers only while powered cleanly); the daemon calls this now
        and then so such a glitch heals by itself.
        """
        n = self.device.cascaded
        for register, value in (
            (REG_SCAN_LIMIT, 7),
            (REG_DECODE_MODE, 0),
            (REG_DISPLAY_TEST, 0),
            (REG_INTENSITY, self.contrast >> 4),
            (REG_SHUTDOWN, 0 if self.blanked else 1),
        ):
            self.device.data([register, value] * n)
        self.device.display(self.frame)

    def close(self) -> None:
        """Blank and clear the chain and release the SPI device."""
        self.device.cleanup()


class EmulatedBoard(_KeptFrame):
    """The board without hardware: keeps the frames it is shown, for the page, GIFs and tests."""

    def __init__(self, width: int, height: int, *, contrast: int = 64, history: int = 900) -> None:
        super().__init__(width, height, contrast)
        # The last `history` distinct frames (30 s at 30 frames per second by default).
        self.frames: deque[Image.Image] = deque(maxlen=history)
        self.shown = 0

    def show(self, image: Image.Image) -> None:
        if image is self.frame:
            return
        self._check(image)
        self.frame = image
        self.frames.append(image)
        self.shown += 1

    def set_contrast(self, level: int) -> None:
        self.contrast = _check_contrast(level)

    def blank(self, on: bool) -> None:
        self.blanked = bool(on)

    def resync(self) -> None:
        """Nothing to heal in memory."""

    def close(self) -> None:
        self.frames.clear()


def make_display(config, *, serial_interface=None) -> Max7219Board | EmulatedBoard:
    """The board ``config`` (a ``DisplayConfig``) describes.

    ``max7219`` opens ``/dev/spidevP.D`` unless a serial interface is given (tests pass a
    ``RecordingSerial``); luma's ``spi`` gets ``gpio=noop()``, or it would claim GPIO 24 and 25
    through RPi.GPIO for the D/C and reset lines a MAX7219 does not have.
    """
    if config.driver == "emulator":
        # The emulator shows the picture the service draws; rotation is a matter of wiring.
        width, height = (config.width, config.height) if config.rotate % 2 == 0 else (config.height, config.width)
        return EmulatedBoard(width, height, contrast=config.contrast)
    if config.driver != "max7219":
        raise DisplayError(f"display.driver {config.driver!r} is not a board this driver knows (max7219, emulator)")
    if serial_interface is None:
        serial_interface = open_spi(config.spi_port, config.spi_device)
    return Max7219Board(
        config.width,
        config.height,
        serial_interface=serial_interface,
        block_orientation=config.block_orientation,
        rotate=config.rotate,
        module_order=config.module_order,
        contrast=config.contrast,
    )


def open_spi(port: int, device: int):
    """luma's ``spi`` on ``/dev/spidev{port}.{device}``, without any GPIO lines."""
    import luma.core.error
    from luma.core.interface.serial import noop, spi

    try:
        return spi(port=port, device=device, gpio=noop())
    except (ImportError, OSError, luma.core.error.Error) as exc:
        raise DisplayUnavailable(
            f"/dev/spidev{port}.{device} cannot be opened ({type(exc).__name__}: {exc}). Fix: enable SPI "
            "(dtparam=spi=on in /boot/firmware/config.txt, or raspi-config → Interface Options → SPI), "
            "install spidev, and put the service user in the 'spi' group"
        ) from exc


def _check_contrast(level: int) -> int:
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 255:
        raise ValueError(f"contrast must be a whole number from 0 to 255, got {level!r}")
    return level


# -- pictures of the board ----------------------------------------------------------------------

_BACKGROUND = (12, 12, 12)
_UNLIT = (52, 14, 10)
_LIT = (255, 64, 32)


@lru_cache(maxsize=8)
def _dots(width: int, height: int, scale: int) -> tuple[Image.Image, Image.Image]:
    """The dot pattern of a ``width``×``height`` board at ``scale``: as a mask and as palette indices."""
    cell = Image.new("1", (scale, scale))
    if scale >= 3:
        ImageDraw.Draw(cell).ellipse((0, 0, scale - 2, scale - 2), fill=1)
    else:
        cell.paste(1, (0, 0, scale, scale))
    mask = Image.new("1", (width * scale, height * scale))
    for y in range(0, height * scale, scale):
        for x in range(0, width * scale, scale):
            mask.paste(cell, (x, y))
    # Palette index 0 between the dots, 1 for an unlit dot; a lit one becomes 2.
    base = Image.frombytes("P", mask.size, mask.convert("L").point(lambda v: 1 if v else 0).tobytes())
    return mask, base


def _palette(contrast: int) -> list[int]:
    # The MAX7219 runs its LEDs at (2·step+1)/32 duty; shown on a screen, a dimmed board should
    # still read as lit, so the colour is scaled over the upper part of the range only.
    fraction = 0.45 + 0.55 * ((contrast >> 4) + 1) / 16
    lit = [round(u + (l - u) * fraction) for u, l in zip(_UNLIT, _LIT)]
    return [*_BACKGROUND, *_UNLIT, *lit]


def led_picture(image: Image.Image, *, scale: int = 4, contrast: int = 255, lit: bool = True) -> Image.Image:
    """``image`` drawn as a board of round LEDs, ``scale`` screen pixels per LED (a palette image)."""
    if scale < 1:
        raise ValueError(f"scale must be 1 or more, got {scale}")
    mask, base = _dots(image.width, image.height, scale)
    picture = base.copy()
    if lit:
        on = ImageChops.logical_and(image.convert("1").resize(mask.size, Image.Resampling.NEAREST), mask)
        picture.paste(2, (0, 0, *mask.size), on)
    picture.putpalette(_palette(contrast))
    return picture


def gif_of(frames: Sequence[Image.Image], fps: float = 30, *, scale: int = 4, contrast: int = 255) -> bytes:
    """An animated GIF of ``frames`` shown at ``fps``, looping; identical neighbours become one frame.

    GIF counts time in hundredths of a second, so each frame's duration is rounded so that the
    whole animation keeps the right total length.
    """
    if not frames:
        raise ValueError("a GIF needs at least one frame")
    runs: list[tuple[Image.Image, int]] = []
    previous = None
    for frame in frames:
        data = frame.tobytes()
        if runs and data == previous:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((frame, 1))
            previous = data
    pictures, durations, shown = [], [], 0
    for frame, count in runs:
        start = round(shown * 100 / fps) * 10
        shown += count
        durations.append(round(shown * 100 / fps) * 10 - start)
        pictures.append(led_picture(frame, scale=scale, contrast=contrast))
    out = io.BytesIO()
    pictures[0].save(out, format="GIF", save_all=True, append_images=pictures[1:], duration=durations, loop=0, optimize=False)
    return out.getvalue()


_HALF_BLOCKS = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}


def terminal_view(image: Image.Image) -> str:
    """The frame in block characters, two LED rows per text line (a 16-row board in 8 lines)."""
    width, height = image.size
    pixels = image.convert("1").load()
    lines = []
    for y in range(0, height, 2):
        lines.append(
            "".join(
                _HALF_BLOCKS[(bool(pixels[x, y]), bool(y + 1 < height and pixels[x, y + 1]))]
                for x in range(width)
            )
        )
    return "\n".join(lines)
