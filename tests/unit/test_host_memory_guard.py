"""Host memory at the step boundary (backend/telemetry/host.py): read from this machine's real
/proc, the backend's peak reset at every read so each reading says what the step just ended
needed; the rule that pauses a run before the kernel would kill it for memory; and what `ls`
says of a run that died with memory short."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend.protocol.events import HostMemory
from backend.telemetry import host
from console.runs import memory_hint

linux = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")


@linux
def test_a_reading_gives_the_peak_since_the_last_one_then_starts_again():
    before = host.read()
    assert before is not None and 0 < before.own_mb <= before.rss_mb and 0 < before.available_mb <= before.total_mb
    block = np.ones(40_000_000)  # 305 MB touched
    block[::512] += 1
    del block
    after = host.read()
    if after.peak_mb is None:
        pytest.skip("this kernel does not let a process reset its peak (/proc/self/clear_refs)")
    assert 280 < after.peak_mb - before.own_mb < 400, (before, after)  # the 305 MB block, and little else
    again = host.read()
    assert again.peak_mb - after.own_mb < 50  # reset: nothing was allocated since


def _at(held, peak, free=0.0):
    return host.Reading(rss_mb=held, own_mb=held, heap_free_mb=free, peak_mb=peak, available_mb=10_000, total_mb=24_000,
                        limit="machine")


def test_the_next_steps_need_is_the_recent_steps_transient_memory_less_what_the_heap_holds_free():
    # an allocator that gives a step's activations back to the kernel: ~4.5 GB a step, taken and returned
    need = host.NextStepNeed()
    assert need.update(_at(3_000, 3_000)) is None  # start-up: no step read yet
    assert need.update(_at(3_500, 8_000)) == 4_500  # the first step also kept 500 MB (the optimizer): not again
    assert need.last == 5_000  # beyond what was held before it
    assert need.update(_at(3_500, 8_100)) == 4_600
    assert need.update(_at(3_500, 7_000)) == 4_600  # the most of the recent steps
    # one that keeps what it freed (run.reuse_host_memory): measured on SmolLM2 under a cgroup limit
    kept = host.NextStepNeed()
    kept.update(_at(3_442, 3_657, free=258))
    # the step reached 10,084 and kept 3,429 of what it freed in the heap: the next one reuses that first
    assert kept.update(_at(7_676, 10_084, free=3_429)) == pytest.approx(10_084 - 7_676)
    # it then needed 3,667 beyond that (a fragmented heap does not give all of its free memory back to one
    # request); its transient memory was 7,078, less the 4,456 now free
    assert kept.update(_at(8_722, 11_343, free=4_456)) == pytest.approx((11_343 - 8_722 + 4_456) - 4_456)
    assert kept.last == pytest.approx(11_343 - 7_676)
    # a kernel that cannot reset the peak: nothing known, nothing guessed
    blind = host.NextStepNeed()
    blind.update(_at(3_000, None))
    assert blind.update(_at(3_500, None)) is None and blind.last is None


def test_the_heap_free_figure_is_glibcs_where_it_can_be_read():
    if host._MALLINFO2 is None:  # not glibc >= 2.33
        assert host.heap_free_mb() == 0.0
        return
    blocks = [bytearray(4096) for _ in range(20_000)]  # 80 MB in small chunks, in the heap (below the mmap threshold)
    free = host.heap_free_mb()  # after allocating: the blocks may have taken free memory the process already had
    del blocks[::2]
    assert host.heap_free_mb() - free > 30  # 40 MB of them freed, interleaved with live ones: kept for reuse
    del blocks


def test_the_next_step_fits_while_a_step_as_large_as_the_largest_leaves_the_floor():
    assert host.next_step_fits(available_mb=10_000, need_mb=None, min_free_mb=512)  # first boundary: not known
    assert host.next_step_fits(available_mb=10_000, need_mb=8_000, min_free_mb=512)  # 10,000 - 8,800 = 1,200
    assert not host.next_step_fits(available_mb=9_000, need_mb=8_000, min_free_mb=512)  # 9,000 - 8,800 = 200
    assert not host.next_step_fits(available_mb=400, need_mb=None, min_free_mb=512)  # below the floor already


def test_a_containers_limit_is_read_where_it_is_tighter(tmp_path):
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "cgroup").write_text("0::/user.slice/job.scope\n")
    base = tmp_path / "cg" / "user.slice" / "job.scope"
    base.mkdir(parents=True)
    (base / "memory.max").write_text(f"{4 * 2**30}\n")
    (base / "memory.current").write_text(f"{3 * 2**30}\n")
    assert host.cgroup_limit(tmp_path, tmp_path / "cg") == (4096.0, 3072.0)
    (base / "memory.stat").write_text(f"anon {2 * 2**30}\ninactive_file {2**29}\nactive_file 4096\n")
    assert host.cgroup_limit(tmp_path, tmp_path / "cg") == (4096.0, 2560.0)  # the inactive page cache is reclaimable
    (base / "memory.max").write_text("max\n")
    assert host.cgroup_limit(tmp_path, tmp_path / "cg") is None  # no limit: the machine's figures stand
    # cgroup v1: the memory controller's own hierarchy; a container sees its own cgroup at the root
    (tmp_path / "self" / "cgroup").write_text("4:memory:/host/path/job\n0::/\n")
    v1 = tmp_path / "cg" / "memory"
    v1.mkdir()
    (v1 / "memory.limit_in_bytes").write_text(f"{6 * 2**30}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{2**30}\n")
    assert host.cgroup_limit(tmp_path, tmp_path / "cg") == (6144.0, 1024.0)
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert host.cgroup_limit(tmp_path, tmp_path / "cg") is None


def test_ls_names_memory_when_a_run_died_with_memory_short():
    short = HostMemory(step=7, rss_mb=21_000, step_need_mb=3_000, available_mb=2_500, total_mb=24_000)
    hint = memory_hint(short)
    assert "likely killed for memory" in hint and "at step 7" in hint and "+2.9 GB" in hint and "micro_batches" in hint
    cgroup = HostMemory(step=3, rss_mb=1_800, step_need_mb=None, available_mb=100, total_mb=2_048, limit="cgroup")
    assert "the container's limit" in memory_hint(cgroup)
    # plenty left and a step needs far less: the death was something else, and `ls` does not guess
    assert memory_hint(HostMemory(step=7, rss_mb=9_000, step_need_mb=3_000, available_mb=12_000, total_mb=24_000)) == ""
    assert memory_hint(None) == ""
    # died in its first step: nothing measured a step yet, so `ls` says where to look, not what it was
    first = memory_hint(HostMemory(step=0, rss_mb=3_000, available_mb=20_000, total_mb=24_000))
    assert "died in its first step (19.5 GB were free before it)" in first and "dmesg" in first, first


SMOL = dict(layers=30, hidden=576, intermediate=1536, heads=9, vocab=49_152, params=134_515_008)


def test_the_first_update_estimate_errs_high_of_what_smollm2_took_on_cpu():
    """Measured on this 2-core box: SmolLM2-135M-Instruct in float32, one forward and backward of
    one sequence (65 completion tokens' logits), its peak RSS above the loaded model less the
    1,055 MB the pass needs whatever its length (gradients, buffers): 509, 1,444 and 3,610 MB a
    sequence at 520, 1,040 and 2,080 tokens. The estimate stays above each, by no more than 40%."""
    for tokens, measured in ((520, 509), (1040, 1444), (2080, 3610)):
        one = host.UpdateShape(**SMOL, sequences=1, prompt_tokens=tokens - 65, completion_tokens=65, passes=1)
        two = host.UpdateShape(**SMOL, sequences=2, prompt_tokens=tokens - 65, completion_tokens=65, passes=1)
        per_seq = host.update_estimate_mb(two) - host.update_estimate_mb(one)
        assert measured <= per_seq <= 1.4 * measured, (tokens, per_seq)


def test_an_update_in_more_passes_holds_a_share_of_the_batch_and_the_fewest_that_fit_are_named():
    # the case that was killed for memory in its first step: 4 prompts × 4, one prompt of 976 tokens
    u = host.UpdateShape(**SMOL, sequences=16, prompt_tokens=976, completion_tokens=8, passes=1)
    whole = host.update_estimate_mb(u)
    assert 20_000 < whole < 27_000  # the kernel killed it at 24 GB
    from dataclasses import replace

    eighth = host.update_estimate_mb(replace(u, passes=8))  # 2 sequences a pass: ran in 9 GB of RSS
    assert eighth < whole / 4 and eighth < 6_000
    k, need = host.passes_that_fit(u, available_mb=15_000, min_free_mb=512)
    assert k == 2 and need == host.update_estimate_mb(replace(u, passes=2))  # 1 does not fit, 2 divides 16 and does
    assert host.passes_that_fit(replace(u, sequences=15), 10_000, 512)[0] in (3, 5, 15)  # divisors only
    assert host.passes_that_fit(u, available_mb=1_000, min_free_mb=512) is None  # not even one sequence a pass


def test_before_any_step_the_guard_goes_by_the_estimate_and_drops_it_once_a_step_is_measured():
    need = host.NextStepNeed()
    need.first_estimate = 6_000.0
    assert need.estimated and need.update(_at(3_000, 3_000, free=200)) == 5_800  # less what the heap holds free
    assert need.update(_at(3_500, 8_000)) == 4_500 and not need.estimated  # the first step's own figure from here on
    assert not host.next_step_fits(5_000, 6_000, 512) and host.next_step_fits(8_000, 6_000, 512)
