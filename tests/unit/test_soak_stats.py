"""The soak's judgement on made-up series: a backlog that levels off passes and one that keeps
growing fails; memory likewise; a lost frame fails the loss check."""

from __future__ import annotations

from pathlib import Path

from bench.soak_stats import (
    SoakSample,
    backlog_check,
    loss_check,
    memory_check,
    rates,
    soak_plot,
    summary_rows,
)

RATE = 50.0
EVERY = 10.0


def _series(backlogs: list[int], rss: list[float]) -> list[SoakSample]:
    samples = []
    for i, (backlog, mb) in enumerate(zip(backlogs, rss, strict=True)):
        published = int(RATE * EVERY * (i + 1))
        samples.append(
            SoakSample(
                t_s=EVERY * (i + 1),
                published=published,
                answered=published - backlog,
                stale=i * 200,
                dead_letters=0,
                duplicates=0,
                rss_mb={"worker": mb, "broker": 100.0 * (i + 1)},
            )
        )
    return samples


def test_a_backlog_that_levels_off_is_bounded() -> None:
    levelled = [300, 700, 780, 760, 790, 770, 800, 780, 775, 790]
    check = backlog_check(_series(levelled, [400.0] * 10), RATE, EVERY)
    assert check["met"] and check["second_half_peak"] == 800


def test_a_backlog_that_keeps_growing_is_not() -> None:
    growing = [250 * (i + 1) for i in range(10)]
    check = backlog_check(_series(growing, [400.0] * 10), RATE, EVERY)
    assert not check["met"]
    assert check["first_half_peak"] == 1250 and check["second_half_peak"] == 2500


def test_memory_that_levels_off_passes_and_a_leak_fails() -> None:
    flat = _series([0] * 12, [300, 380, 400, 405, 410, 402, 408, 411, 409, 412, 410, 415])
    leak = _series([0] * 12, [300, 380, 400, 450, 500, 550, 600, 650, 700, 750, 800, 850])
    assert memory_check(flat, ["worker"])["worker"]["met"]
    leaked = memory_check(leak, ["worker"])["worker"]
    assert not leaked["met"] and leaked["end_mb"] == 850 and leaked["after_warmup_mb"] == 450


def test_too_few_samples_fail_rather_than_pass() -> None:
    short = _series([0, 0], [1.0, 1.0])
    assert not backlog_check(short, RATE, EVERY)["met"]
    assert not memory_check(short, ["worker"])["worker"]["met"]


def test_every_frame_answered_once() -> None:
    assert loss_check(1000, 1000, 0)["met"]
    lost = loss_check(1000, 999, 0)
    assert not lost["met"] and lost["lost"] == 1


def test_rates_summary_and_plot(tmp_path: Path) -> None:
    samples = _series([100, 200, 250, 240], [400.0, 410.0, 405.0, 407.0])
    steps = rates(samples)
    assert [r["published_per_s"] for r in steps] == [RATE] * 3
    assert steps[0]["answered_per_s"] == 40.0  # 100 more frames waiting after 10 s at 50/s
    report = {
        "sustained_fps": 25.0,
        "factor": 2.0,
        "offered_fps": RATE,
        "duration_s": 40.0,
        "published_fps": RATE,
        "stale_total": 600,
        "dead_letters_total": 0,
        "samples": [s.as_dict() for s in samples],
        "rates": steps,
        "other_rss_end_mb": {"broker": 400.0},
        "checks": {
            "backlog": backlog_check(samples, RATE, EVERY),
            "memory": memory_check(samples, ["worker"]),
            "loss": loss_check(2000, 2000, 0),
        },
    }
    rows = dict(summary_rows(report))
    assert rows["unanswered after the drain / duplicated"] == "0 / 0"
    assert rows["RSS worker"].endswith(": bounded")
    assert "not judged" in " ".join(rows)
    png = soak_plot(report, tmp_path / "soak.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_soak_too_short_to_judge_is_refused_before_it_starts() -> None:
    from click.testing import CliRunner

    from bench.cli import soak_command

    result = CliRunner().invoke(soak_command, ["--minutes", "0.5"])
    assert result.exit_code == 2
    assert "--minutes 0.5 gives fewer than 4 samples of 10 s" in result.output
