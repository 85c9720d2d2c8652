"""The LED board's cost per frame while scrolling, beside luma's bare ``display()`` (issue 5).

A long Chinese notice scrolls on a 128×16 MAX7219 board for ``--duration`` seconds (60 by
default) at 30 frames per second, paced by the wall clock as the daemon's loop is. Each frame is
what the daemon will do: ``BoardService.next_frame()`` (the playlist's decision and a crop of
the notice's strip) and the driver (``set_contrast``, ``blank``, ``show`` → luma's
``max7219.display()`` → the serial interface). The baseline, measured in the same run and
alternating with it, is luma's bare ``display()`` of frames of the same size rendered
beforehand. Both write to luma's ``noop`` serial interface, so neither pays for SPI.

Measured per repetition: the mean CPU time of the frame's work (``time.thread_time_ns``, so
sleeping between frames does not count), and the 99th percentile of the interval between the
starts of consecutive frames; for our side also the part spent in ``next_frame()`` alone.
The table shows the median of the repetitions with min and max.
Targets: CPU per frame ≤ 1.2× the bare cost; interval p99 ≤ 40 ms.

Our driver packs the frame with Pillow instead of luma's pixel-by-pixel loop (the bytes are
luma's: ``tests/test_display.py`` compares them), so "ours" is expected well under the bare
figure; the service's own share is shown on its own row.

The notice starts moving at once (``lead_s = 0``): every measured frame is a scrolling one,
not a held first screen that costs nothing.

    .venv/bin/python bench/board_bench.py            # 5 × 60 s each side: about ten minutes
    .venv/bin/python bench/board_bench.py --quick    # 3 × 3 s each side: a smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/board_bench.py` puts bench/, not the checkout, on the path
    sys.path.insert(0, str(REPO))

from luma.core.interface.serial import noop  # noqa: E402
from luma.led_matrix.device import max7219  # noqa: E402

from appliance.clock import SystemClock  # noqa: E402
from drivers.display import Max7219Board  # noqa: E402
from services.board import BoardService, BoardSettings, Font, validate_item  # noqa: E402

# luma.led_matrix 1.9 calls Image.getdata(), deprecated in Pillow 13: not what is measured.
warnings.filterwarnings("ignore", message="Image.Image.getdata is deprecated", category=DeprecationWarning)

WIDTH, HEIGHT, FPS = 128, 16, 30
CPU_TARGET = 1.2
P99_TARGET_MS = 40.0
NOTICE = (
    "关于做好二〇二六年度城乡居民基本医疗保险参保缴费工作的通知：各位村民，二〇二六年度城乡居民医保"
    "个人缴费标准为每人每年四百元，缴费时间为即日起至十二月三十一日。请携带身份证或社会保障卡到政务"
    "服务中心社保医保窗口办理，也可通过手机缴费。脱贫人口、低保对象、特困人员等按规定享受参保资助。"
    "咨询电话：〇四七九一二三四五六七。"
)


class AlwaysOpen:
    """The bench measures scrolling, not opening hours."""

    def is_open(self, at) -> bool:
        return True


@dataclass
class Run:
    """One repetition of one side: mean CPU per frame (and of its first part), and the interval p99."""

    frames: int
    cpu_us: float
    interval_p99_ms: float
    first_part_us: float = 0.0


def paced(duration_s: float, work) -> Run:
    """Call ``work()`` at FPS for ``duration_s``; measure its CPU time and the frame intervals.

    ``work`` may return the thread time at which its first part ended, to be reported apart.
    """
    period = 1 / FPS
    cpu, firsts, starts = [], [], []
    begin = deadline = time.perf_counter()
    while True:
        now = time.perf_counter()
        if now - begin >= duration_s:
            break
        if deadline > now:
            time.sleep(deadline - now)
        starts.append(time.perf_counter())
        t0 = time.thread_time_ns()
        split = work()
        cpu.append(time.thread_time_ns() - t0)
        if split is not None:
            firsts.append(split - t0)
        deadline += period
        if deadline < time.perf_counter() - period:  # fell behind by a whole frame: do not burst
            deadline = time.perf_counter()
    intervals = sorted((b - a) * 1000 for a, b in zip(starts, starts[1:]))
    p99 = intervals[min(len(intervals) - 1, int(0.99 * len(intervals)))] if intervals else 0.0
    return Run(len(cpu), statistics.fmean(cpu) / 1000, p99, statistics.fmean(firsts) / 1000 if firsts else 0.0)


def ours(font: Font, duration_s: float) -> Run:
    settings = BoardSettings(lead_s=0.0)
    service = BoardService(font, WIDTH, HEIGHT, AlwaysOpen(), SystemClock("assume_synced"), settings)
    service.set_items("county", [validate_item({"id": "yibao-2026", "kind": "policy", "text": NOTICE}, font, source="county")])
    board = Max7219Board(WIDTH, HEIGHT, serial_interface=noop(), contrast=64)
    assert service.renderer.strip(NOTICE).duration > duration_s, "the notice must outlast the run"

    def frame() -> int:
        f = service.next_frame()
        decided = time.thread_time_ns()
        board.set_contrast(f.contrast)
        board.blank(f.blank)
        if f.changed and not f.blank:
            board.show(f.image)
        return decided

    return paced(duration_s, frame)


def bare(font: Font, duration_s: float) -> Run:
    # The same pictures, cropped beforehand: all that is left per frame is luma's display().
    renderer = BoardService(font, WIDTH, HEIGHT, AlwaysOpen(), SystemClock("assume_synced"), BoardSettings(lead_s=0.0)).renderer
    strip = renderer.strip(NOTICE)
    frames = [renderer.frame(strip, o) for o in range(strip.travel)]
    device = max7219(noop(), width=WIDTH, height=HEIGHT)
    i = 0

    def frame() -> None:
        nonlocal i
        device.display(frames[i % len(frames)])
        i += 1

    return paced(duration_s, frame)


def spread(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} [{format(min(values), fmt)}–{format(max(values), fmt)}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions of 3 s each side (a smoke run)")
    parser.add_argument("--duration", type=float, help="seconds of scrolling per repetition and side (default 60)")
    parser.add_argument("--reps", type=int, help="repetitions (default 5)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    duration = args.duration or (3.0 if args.quick else 60.0)
    reps = args.reps or (3 if args.quick else 5)

    font = Font()
    ours_runs: list[Run] = []
    bare_runs: list[Run] = []
    print(f"board bench: {WIDTH}×{HEIGHT}, {FPS} frames/s, {reps} × {duration:g} s each side, {len(NOTICE)}-character notice", file=sys.stderr)
    for rep in range(reps):
        for side, runs, fn in (("ours", ours_runs, ours), ("bare", bare_runs, bare)):
            gc.collect()
            runs.append(fn(font, duration))
            r = runs[-1]
            service = f" (next_frame {r.first_part_us:.1f})" if side == "ours" else ""
            print(f"  rep {rep + 1} {side}: {r.frames} frames, {r.cpu_us:.1f} µs CPU/frame{service}, interval p99 {r.interval_p99_ms:.1f} ms", file=sys.stderr)

    ratios = [o.cpu_us / b.cpu_us for o, b in zip(ours_runs, bare_runs)]
    ratio = statistics.median(ratios)
    p99 = statistics.median(r.interval_p99_ms for r in ours_runs)
    rows = [
        ("CPU per frame, µs", spread([r.cpu_us for r in ours_runs], ".1f"), spread([r.cpu_us for r in bare_runs], ".1f"), f"{ratio:.2f}×", f"≤ {CPU_TARGET}×", ratio <= CPU_TARGET),
        ("  of which next_frame(), µs", spread([r.first_part_us for r in ours_runs], ".1f"), "", f"{statistics.median(r.first_part_us / b.cpu_us for r, b in zip(ours_runs, bare_runs)):.2f}×", "", True),
        ("frame interval p99, ms", spread([r.interval_p99_ms for r in ours_runs], ".1f"), spread([r.interval_p99_ms for r in bare_runs], ".1f"), "", f"≤ {P99_TARGET_MS:g} ms", p99 <= P99_TARGET_MS),
    ]
    header = ("figure (128×16, 30 fps)", "board service + driver", "bare luma display()", "ratio", "target", "")
    widths = [max(len(str(row[i])) for row in [header, *[(*r[:5], "") for r in rows]]) for i in range(5)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)) + " | result")
    print("-+-".join("-" * w for w in widths) + "-+-------")
    for *cells, ok in rows:
        verdict = "" if not cells[4] else ("PASS" if ok else "FAIL")
        print(" | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + f" | {verdict}")
    print(f"(median [min–max] of {reps} repetitions of {duration:g} s; Python {platform.python_version()} on {platform.machine()})")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "duration_s": duration,
                    "repetitions": reps,
                    "ours": [asdict(r) for r in ours_runs],
                    "bare": [asdict(r) for r in bare_runs],
                    "cpu_ratio": ratio,
                    "interval_p99_ms": p99,
                    "pass": all(ok for *_, ok in rows),
                },
                indent=2,
            )
        )
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
