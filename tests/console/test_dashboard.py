"""Dashboard screen, driven by Pilot against the scripted source."""

from __future__ import annotations

import pytest

from backend.protocol.events import GpuInfo, GpuStats, HostMemory
from console.app import RLConsoleApp
from console.screens.dashboard import DashboardScreen
from console.widgets.reward_chart import RewardChart, fit_columns, nice_ticks, tick_label


def _render_plain(widget) -> str:
    """A line-API widget's content as plain text, one line per row."""
    return "\n".join(widget.render_line(y).text.rstrip() for y in range(widget.size.height))


async def test_dashboard_shows_run_at_80x24(kit):
    source = kit.Source(kit.make_run(steps=12))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        assert isinstance(app.screen, DashboardScreen)
        text = kit.screen_text(app)
        lines = text.splitlines()
        assert len(lines) == 24 and max(len(line) for line in lines) <= 80
        header = lines[0]
        for part in (kit.RUN_ID, "RUNNING", "step 12", "weights v12", "0:00:40"):
            assert part in header, part
        assert "reward · total · mean ±std" in text
        assert "824 tok/s" in text and "14.2 samples/s" in text and "2.70s/step" in text
        assert "gen 1.80" in text and "trn 0.70" in text and "syn 0.12" in text
        assert "no GPU (CPU run)" in text
        assert "WARNING" in text and "zero reward std" in text
        assert "s12 g3" in text and "12.3" not in text and "tliuq" in text  # newest group row (s12 g3: step 12, group 3), its best completion
        assert "? help" in text  # footer
        assert not app.query_one("#startup").display  # running: no startup panel


async def test_startup_progress_is_prominent_while_starting(kit):
    source = kit.Source(kit.starting_run())
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        text = kit.screen_text(app)
        assert app.query_one("#startup").display
        assert "STARTING" in text.splitlines()[0]
        assert "starting: engine" in text
        assert "engine: starting vLLM engine (cpu)" in text
        assert "2/5" in text and "40%" in text and "█" in text
        assert "waiting for the first step" in text


async def test_before_any_event_the_screen_says_what_it_waits_for(kit):
    source = kit.Source([])
    app = RLConsoleApp(source, run_id="r-42")
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        text = kit.screen_text(app)
        assert "r-42" in text and "UNKNOWN" in text
        assert "waiting for the backend" in text


async def test_f_cycles_reward_function_and_markers_are_drawn(kit):
    source = kit.Source(kit.make_run(steps=12, params_at=5))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        chart = app.query_one(RewardChart)
        assert chart.label == "total"
        rendered = _render_plain(chart)
        marker_row = rendered.splitlines()[-2]
        assert "P" in marker_row  # ParamsApplied at step 5
        assert rendered.splitlines()[-1].strip().startswith("step 1") and rendered.splitlines()[-1].endswith("12")
        labels = []
        for _ in range(3):
            await pilot.press("f")
            await kit.settle(pilot)
            labels.append(chart.label)
        assert labels == ["char_match", "first_char", "total"]
        await pilot.press("f")
        await kit.settle(pilot)
        assert "reward · char_match · mean" in kit.screen_text(app)
        assert "±std" not in str(chart.border_title)  # per-function series carry no std


async def test_gpu_panel_lists_each_gpu(kit):
    gpus = GpuStats(ts=kit.TS0 + 100, available=True, gpus=[
        GpuInfo(index=0, name="H100", util_pct=87, mem_used_mb=40_960, mem_total_mb=81_920, power_w=350, temperature_c=65),
        GpuInfo(index=1, name="H100", util_pct=12, mem_used_mb=2_048, mem_total_mb=81_920, power_w=90, temperature_c=40),
    ])
    source = kit.Source([*kit.make_run(steps=3), gpus])
    app = RLConsoleApp(source)
    async with app.run_test(size=(160, 48)) as pilot:
        await kit.settle(pilot, source)
        text = kit.screen_text(app)
        assert "#0  87% mem 40.0/80G 350W 65°C H100" in text
        assert "#1  12% mem 2.0/80G 90W 40°C H100" in text
        assert "CPU run" not in text


async def test_wide_terminal_shows_more(kit):
    counts = {}
    for size in ((80, 24), (160, 48)):
        source = kit.Source(kit.make_run(steps=12))
        app = RLConsoleApp(source)
        async with app.run_test(size=size) as pilot:
            await kit.settle(pilot, source)
            text = kit.screen_text(app)
            counts[size] = sum(1 for line in text.splitlines() if "Reverse the word" in line)
            chart = app.query_one(RewardChart)
            counts[size, "chart"] = chart.size.width * chart.size.height
    assert counts[(80, 24)] >= 3
    assert counts[(160, 48)] > 2 * counts[(80, 24)]
    assert counts[(160, 48), "chart"] > 2 * counts[(80, 24), "chart"]


def test_nice_ticks_round_the_axis():
    # the range widens to multiples of a 1 / 2 / 2.5 / 5 × 10^k step within the interval budget
    assert nice_ticks(-0.0019, 1.18, 4) == (-0.5, 1.5, 0.5)
    assert nice_ticks(0.422, 1.56, 8) == pytest.approx((0.4, 1.6, 0.2))
    assert nice_ticks(0.2, 0.35, 6) == pytest.approx((0.2, 0.35, 0.025))
    assert nice_ticks(1.0, 1.0, 2) == (0.5, 1.5, 0.5)  # flat: a unit window around it
    assert [tick_label(v, 0.5).strip() for v in (-0.5, 0.0, 0.5, 1.0)] == ["-0.5", "0", "0.5", "1.0"]
    assert tick_label(1e-17, 0.1).strip() == "0"  # float noise is not -0.0 or 1e-17
    assert tick_label(0.225, 0.025).strip() == "0.225" and tick_label(20000, 10000).strip() == "20000"


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_reward_axis_labels_are_round_values(kit, size):
    from backend.protocol.events import SampleGroup, StepMetrics, StepTimes

    times = StepTimes(generate=1.0, score=0.1, train=0.5, sync=0.1, total=1.7)
    # means from -0.0019 to 1.18: the old axis read 1.18 / 0.591 / -0.0019
    steps = [StepMetrics(ts=kit.TS0 + i, step=i, reward_mean=-0.0019 + 1.1819 * i / 29, reward_std=0.0, tokens_per_s=1.0,
                         samples_per_s=1.0, times=times) for i in range(30)]
    start = [e for e in kit.make_run(steps=1) if not isinstance(e, (StepMetrics, SampleGroup))]  # a running run
    source = kit.Source([*start, *steps])
    app = RLConsoleApp(source)
    async with app.run_test(size=size) as pilot:
        await kit.settle(pilot, source)
        rows = _render_plain(app.query_one(RewardChart)).splitlines()[:-2]
        labels = [row.split("┤")[0].strip() for row in rows if row.split("┤")[0].strip()]
        assert len(labels) >= 2, rows
        for label in labels:
            value = float(label)
            assert round(value * 4) == value * 4 or round(value * 10) == value * 10, label  # 0.25 / 0.1 multiples
            assert label == "0" or "." not in label or len(label.split(".")[1]) <= 2, label
        assert "0" in labels and ("1.0" in labels or "1" in labels)


def test_fit_columns_stretches_and_buckets():
    few = [(1, 0.0, 0.1), (2, 1.0, 0.1)]
    cols, xs = fit_columns(few, 5)
    assert xs == [0, 4] and [round(m, 2) for m, _, _ in cols] == [0.0, 0.25, 0.5, 0.75, 1.0]
    many = [(i, float(i), None) for i in range(100)]
    cols, xs = fit_columns(many, 10)
    assert len(cols) == 10 and xs[0] == 0 and xs[-1] == 9
    assert cols[0][0] == sum(range(10)) / 10  # bucket mean
    assert fit_columns([], 10) == ([], [])


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_no_gpu_is_one_short_line_with_the_reason_in_tooltip_and_log(kit, size):
    reason = "no NVIDIA GPU (NVMLError_LibraryNotFound)"
    source = kit.Source([*kit.make_run(steps=2), GpuStats(ts=kit.TS0 + 60, available=False, reason=reason)])
    app = RLConsoleApp(source)
    async with app.run_test(size=size) as pilot:
        await kit.settle(pilot, source)
        panel = app.query_one("#gpu")
        text = kit.screen_text(app)
        assert "no GPU (CPU run)" in text and "NVMLError" not in text
        assert panel.content_region.height == 1  # one line, not three
        assert panel.tooltip == reason
        assert any(reason in entry.text for entry in app.state.log)


async def test_throughput_lines_never_wrap(kit):
    from backend.protocol.events import StepMetrics, StepTimes

    busy = StepMetrics(ts=kit.TS0 + 99, step=13, reward_mean=0.3, reward_std=0.1, tokens_per_s=17_290.4,
                       samples_per_s=1_007.5, times=StepTimes(generate=0.03, score=0.001, train=0.05, sync=0.01, total=0.091),
                       logprob_diff_mean=0.0123, logprob_diff_max=0.41, reward_finished=0.82, reward_truncated=0.1)
    source = kit.Source([*kit.make_run(steps=12), busy])
    app = RLConsoleApp(source)
    async with app.run_test(size=(120, 36)) as pilot:
        await kit.settle(pilot, source)
        panel = app.query_one("#throughput")
        lines = [strip.text for strip in panel.render_lines(panel.region.reset_offset)]
        body = [line.strip("│ ") for line in lines[1:-1]]
        assert len(body) == 5  # a 36-cell panel: the legend takes two lines rather than being cut
        assert body[0].startswith("17,290 tok/s  1,007.5 samples/s")
        assert set(body[1]) == {"█"}
        assert body[2] == "■gen 0.03 ■scr 0.00" and body[3] == "■trn 0.05 ■syn 0.01 s"
        # trainer-engine agreement and the reward of finished vs truncated completions, cut not wrapped
        assert body[4].startswith("Δlogp 0.012 max 0.41 @13  reward") and body[4].endswith("…")


async def test_a_step_that_compiled_says_so_first(kit):
    from backend.protocol.events import StepMetrics, StepTimes

    slow = StepMetrics(ts=kit.TS0 + 99, step=13, reward_mean=0.3, reward_std=0.1, tokens_per_s=1_290.4, samples_per_s=2.5,
                       times=StepTimes(generate=0.1, score=0.001, train=102.4, sync=0.01, total=102.6, compile=101.9))
    source = kit.Source([*kit.make_run(steps=12), slow])
    app = RLConsoleApp(source)
    async with app.run_test(size=(120, 36)) as pilot:
        await kit.settle(pilot, source)
        panel = app.query_one("#throughput")
        lines = [strip.text for strip in panel.render_lines(panel.region.reset_offset)]
        assert lines[1].strip("│ ").startswith("compiling 101.9s of 102.60s/step"), lines


async def test_alerts_strip_shows_active_conditions_first_with_their_current_value(kit):
    """A lasting alert stays on top while it holds (since when, the metric's value now, in the
    message's unit); its cleared event takes it off the active list; single-event alerts
    follow, newest first."""
    from backend.protocol.events import Alert, StepMetrics

    run = kit.make_run(steps=6)
    zs = Alert(ts=kit.TS0 + 500, rule="zero_std", severity="warning", message="90% of groups have all-equal rewards",
               step=3, metric="frac_reward_zero_std", value=0.9, threshold=0.75, lasting=True, since=3)
    dead = Alert(ts=kit.TS0 + 501, rule="engine_dead", severity="critical", message="replica 1 died", step=5)
    now = StepMetrics(ts=kit.TS0 + 502, step=7, reward_mean=0.9, reward_std=0.0, frac_reward_zero_std=0.81)
    source = kit.Source([*run, zs, dead, now])
    app = RLConsoleApp(source)
    async with app.run_test(size=(160, 48)) as pilot:
        await kit.settle(pilot, source)
        text = kit.screen_text(app)
        active = next(line for line in text.splitlines() if "90% of groups" in line)
        assert "since 3 · now 81%" in active  # a share, said in percent as its message says it
        assert text.index("90% of groups") < text.index("replica 1 died")  # active first
        assert list(app.state.active_alerts) == ["zero_std"]
        source.push(Alert(ts=kit.TS0 + 600, rule="zero_std", severity="warning", message="zero_std cleared: not seen for 3 steps",
                          step=10, state="cleared", lasting=True, since=3))
        await kit.wait_for(pilot, lambda: not app.state.active_alerts, what="cleared")
        await kit.settle(pilot)
        text = kit.screen_text(app)
        assert "CLEARED" in text and "since 3 · now" not in text


async def test_metrics_screen_small_multiples_at_80x24_and_160x48(kit):
    """`m`: every metric operators read, each with its newest value, range and sparkline; the
    title carries step N/max and an ETA. One column at 80x24, two at 160x48."""
    from backend.protocol.events import RunStarted

    run = kit.make_run(steps=12)
    started = next(e for e in run if isinstance(e, RunStarted))
    run[run.index(started)] = started.model_copy(update={"profile_data": {"run": {"max_steps": 300}}})
    for size, columns in (((80, 24), 1), ((160, 48), 2)):
        source = kit.Source(list(run))
        app = RLConsoleApp(source)
        async with app.run_test(size=size) as pilot:
            await kit.settle(pilot, source)
            await pilot.press("m")
            await kit.settle(pilot)
            grid = app.screen.query_one("#metrics-grid")
            assert grid.columns(grid.size.width) == columns
            text = kit.screen_text(app)
            assert "step 12/300 · ETA" in text
            for name in ("reward", "loss", "kl", "entropy", "zero-std"):
                assert f"│ {name}" in text or f"  {name} " in text, (name, size)
            if size == (160, 48):
                for name in ("truncated", "Δlogp", "tokens/s"):
                    assert name in text, name
            assert any(ch in text for ch in "▁▂▃▄▅▆▇█")


async def test_a_setup_failure_shows_its_reason_in_the_body(kit):
    """FAILED before any step: the dashboard body says why (whole reason, wrapped) and what next,
    not 'waiting for the first step'."""
    from backend.protocol.events import StateChanged

    run = kit.make_run(steps=0)[:3]  # run started, progress, but no step
    reason = ("setup failed: EngineError: vLLM failed to start on /models/x: ValueError: head size 16 is not "
              "supported; use one of 32, 64, 80, 96, 112, 128, 256")
    source = kit.Source([*run, StateChanged(ts=kit.TS0 + 9, state="failed", reason=reason, step=0)])
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        text = kit.screen_text(app)
        assert "FAILED" in text.splitlines()[0]
        assert "the run failed before its first step" in text and "head size 16" in text
        assert "use one of 32, 64" in text  # the end of the reason too, wrapped rather than cut


def test_reward_share_per_function_uses_the_runs_weights():
    from backend.protocol.events import RunStarted, StepMetrics

    from console.screens.metrics import metric_series, reward_share
    from console.state import RunState

    state = RunState()
    state.apply(RunStarted(run_id="r", profile="p", model="m", task="t", engine="e", reward_functions=["correct", "format"],
                           reward_weights=[3.0, 1.0]))
    m = StepMetrics(step=1, reward_mean=1.0, reward_std=0.0, rewards_by_function={"correct": 0.1, "format": 0.9})
    state.apply(m)
    assert reward_share(state, m, "correct") == pytest.approx(25.0) and reward_share(state, m, "format") == pytest.approx(75.0)
    names = [s.name for s in metric_series(state)]
    assert "% correct" in names and "% format" in names


# -- natural bounds, zoom, markers (issue 16) ---------------------------------------------------

def _started(kit, ranges, weights=(1.0, 1.0)):
    from backend.protocol.events import RunStarted

    return RunStarted(run_id=kit.RUN_ID, profile="p", model="m", task="t", engine="e", reward_functions=list(kit.FUNCS),
                      reward_weights=list(weights), reward_ranges=list(ranges))


def test_reward_bounds_are_the_declared_ranges_weighted_and_never_guessed(kit):
    from console.state import RunState

    state = RunState()
    state.apply(_started(kit, [(0.0, 1.0), (0.0, 1.0)], weights=(0.75, 0.25)))
    assert state.reward_bounds() == (0.0, 1.0)  # TRL's total: the weighted sum
    assert state.reward_bounds("char_match") == (0.0, 1.0)  # one function: its own range, unweighted
    state = RunState()
    state.apply(_started(kit, [(0.0, 1.0), (-1.0, 2.0)], weights=(-2.0, 0.5)))
    assert state.reward_bounds() == (-2.5, 1.0)  # a negative weight turns its range over
    state = RunState()
    state.apply(_started(kit, [(0.0, 1.0), None]))  # one function declares none: the total is unknown
    assert state.reward_bounds() is None and state.reward_bounds("char_match") == (0.0, 1.0)
    assert state.reward_bounds("first_char") is None
    state = RunState()
    state.apply(_started(kit, []))  # an older backend, or no declarations
    for event in kit.make_run(steps=3)[1:]:  # rewards seen from 0 to 2: still no bounds
        state.apply(event)
    assert state.reward_bounds() is None


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_known_bounds_are_marked_on_the_chart_and_unknown_ones_are_not(kit, size):
    for ranges in ([(0.0, 1.0), (0.0, 1.0)], None):
        source = kit.Source(kit.make_run(steps=12, reward_ranges=ranges))
        app = RLConsoleApp(source)
        async with app.run_test(size=size) as pilot:
            await kit.settle(pilot, source)
            chart = app.query_one(RewardChart)
            rows = _render_plain(chart).splitlines()[:-2]
            dotted = [row for row in rows if "┈" in row]
            if ranges is None:
                assert not dotted and "bounds" not in str(chart.border_title)
                continue
            assert "bounds 0…2" in str(chart.border_title)  # the two functions' [0, 1], summed
            # the bounds are the plot's top and bottom rows, labelled, dotted where the curve is not
            assert float(rows[0].split("┤")[0]) == 2.0 and "┈" in rows[0]
            assert float(rows[-1].split("┤")[0]) == 0.0 and "┈" in rows[-1]
            assert len(dotted) == 2
            await pilot.press("f")  # one function: its own range
            await kit.settle(pilot)
            assert "bounds 0…1" in str(chart.border_title)


def _long_run(kit, steps):
    from backend.protocol.events import SampleGroup

    return [e for e in kit.make_run(steps=steps, groups=1, g=2) if not isinstance(e, SampleGroup)]


async def test_z_zooms_the_charts_to_the_last_steps_and_back(kit):
    source = kit.Source(_long_run(kit, 300))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        chart = app.query_one(RewardChart)

        def axis() -> str:
            return _render_plain(chart).splitlines()[-1].strip()

        assert "all 300 steps" in str(chart.border_title) and axis().startswith("step 1 ")
        spans = []
        for _ in range(3):
            await pilot.press("z")
            await kit.settle(pilot)
            spans.append((str(chart.border_title).split(" · ")[-1], axis().split()[1], axis().split()[-1]))
        assert spans == [("last 200 steps", "101", "300"), ("last 50 steps", "251", "300"), ("all 300 steps", "1", "300")]
        await pilot.press("z")  # the metrics screen follows the same window
        await pilot.press("m")
        await kit.settle(pilot)
        assert "step 300 · last 200 steps (z)" in kit.screen_text(app)


async def test_z_on_a_short_run_says_the_whole_run_is_shown(kit):
    source = kit.Source(kit.make_run(steps=12))
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        await pilot.press("z")
        await kit.settle(pilot)
        assert app.chart_window is None and "all 12 steps" in str(app.query_one(RewardChart).border_title)
        assert "every step already (12)" in kit.screen_text(app)


def test_markers_never_hide_each_other():
    from console.state import Marker
    from console.widgets.reward_chart import SEVERAL, place_markers

    steps = list(range(1, 11))
    xs = [2 * (s - 1) * 3 for s in steps]  # step s at column 3(s-1)
    same_step = [Marker(5, "pause", "‖"), Marker(5, "params", "P"), Marker(5, "alert", "!")]
    placed = place_markers(same_step, steps, xs, 40)
    assert sorted(label for label, _ in placed.values()) == sorted(["‖", "P", "!"])
    assert all(abs(c - 12) <= 2 for c in placed)  # each within two columns of step 5's
    crowded = [Marker(5, "params", "P")] * 7  # more than fit within reach: the column says "several"
    placed = place_markers(crowded, steps, xs, 40)
    assert set(placed) == {10, 11, 12, 13, 14} and placed[12] == SEVERAL
    # a marker before the window's first step is left out, not drawn at its edge
    assert place_markers([Marker(2, "params", "P")], steps[5:], xs[5:], 40, first_step=6) == {}


async def test_pause_params_and_alert_at_one_step_are_all_on_the_chart(kit):
    from backend.protocol.events import StateChanged

    events = kit.make_run(steps=12, params_at=8, alert_at=8)
    n = len(events)
    events += [StateChanged(seq=n, ts=kit.TS0 + 100, state="paused", step=8),
               StateChanged(seq=n + 1, ts=kit.TS0 + 101, state="running", step=8)]
    source = kit.Source(events)
    app = RLConsoleApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await kit.settle(pilot, source)
        marker_row = _render_plain(app.query_one(RewardChart)).splitlines()[-2]
        assert all(m in marker_row for m in ("‖", "P", "!")), marker_row


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_host_memory_shares_the_cpu_runs_line_and_turns_red_when_a_step_would_not_fit(kit, size):
    no_gpu = GpuStats(ts=kit.TS0 + 60, available=False, reason="no NVIDIA GPU")
    roomy = HostMemory(ts=kit.TS0 + 61, step=2, rss_mb=9_300, step_need_mb=5_200, available_mb=14_000, total_mb=24_000)
    source = kit.Source([*kit.make_run(steps=2), no_gpu, roomy])
    app = RLConsoleApp(source)
    async with app.run_test(size=size) as pilot:
        await kit.settle(pilot, source)
        panel = app.query_one("#gpu")
        text = kit.screen_text(app)
        assert panel.content_region.height == 1  # still one line on a CPU run
        line = next(line for line in text.splitlines() if "no GPU · mem" in line)
        if size[0] >= 160:
            assert "no GPU · mem 13.7/23.4G free · run 9.1G +5.1G/step" in line, line
        else:  # at 80 columns the line is cut where the panel ends: what is left comes first
            assert "no GPU · mem 13.7/23.4G free" in line, line
        free = panel.render().spans
        assert not any("red" in str(s.style) for s in free)
        short = HostMemory(ts=kit.TS0 + 62, step=3, rss_mb=20_000, step_need_mb=5_200, available_mb=4_000, total_mb=24_000)
        source.push(short)
        await kit.settle(pilot, source)
        assert any("red" in str(s.style) for s in panel.render().spans)  # the free figure, in red
        assert any("host memory at step 3: the run holds 19.5 GB, the step needed +5.1 GB; 3.9 GB free of 23.4 GB" in e.text
                   for e in app.state.log)


async def test_host_memory_is_a_line_of_its_own_under_the_gpus(kit):
    gpus = GpuStats(ts=kit.TS0 + 100, available=True, gpus=[
        GpuInfo(index=0, name="H200", util_pct=50, mem_used_mb=40_960, mem_total_mb=143_360)])
    mem = HostMemory(ts=kit.TS0 + 101, step=3, rss_mb=1_500, step_need_mb=None, available_mb=1_000, total_mb=2_048,
                     limit="cgroup")
    source = kit.Source([*kit.make_run(steps=3), gpus, mem])
    app = RLConsoleApp(source)
    async with app.run_test(size=(160, 48)) as pilot:
        await kit.settle(pilot, source)
        assert app.query_one("#gpu").content_region.height == 2
        assert "mem 1.0/2.0G free (limit) · run 1.5G" in kit.screen_text(app)
