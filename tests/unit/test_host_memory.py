"""The two process settings that keep a CPU step from faulting in fresh pages: glibc's
thresholds fixed (`backend.hostmem`) and TRL's fused log-prob tile fitted to a small vocabulary
(`trl_compat.fit_logprob_tile`). What they change is checked, and that the tile's width does
not change the log-probs, the entropy or the gradients TRL's loss gets."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest
import torch

from backend.training import trl_compat

GLIBC = platform.libc_ver()[0] == "glibc"

# a fresh interpreter: malloc a 20 MiB block and say whether it lies in the brk heap
WHERE = textwrap.dedent("""
    import ctypes, sys
    if sys.argv[1] == "tuned":
        from backend.hostmem import reuse_freed_memory
        print(reuse_freed_memory())
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    ptr = libc.malloc(20 * 1024 * 1024)
    for line in open("/proc/self/maps"):
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        if lo <= ptr < hi:
            print("heap" if line.rstrip().endswith("[heap]") else "mapped")
""")


def _where(mode: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", WHERE, mode], capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.split("\n")


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_reuse_freed_memory_keeps_blocks_up_to_32_mib_in_the_heap():
    # glibc's default maps a first 20 MiB block on its own (freed back to the kernel, faulted in again next time)
    assert _where("default")[0] == "mapped"
    said, where = _where("tuned")[:2]
    assert "kept for reuse" in said, said
    assert where == "heap", "with the thresholds fixed, a 20 MiB block comes from the heap and stays there when freed"


@pytest.fixture
def tile(monkeypatch):
    from trl.trainer import utils

    monkeypatch.setattr(utils, trl_compat.LOGPROB_TILE, getattr(utils, trl_compat.LOGPROB_TILE))  # restored after
    return utils


def test_fit_logprob_tile_narrows_only_to_a_smaller_vocabulary(tile):
    wide = getattr(tile, trl_compat.LOGPROB_TILE)
    assert trl_compat.fit_logprob_tile(wide * 2) == wide, "a large vocabulary keeps TRL's tile"
    assert getattr(tile, trl_compat.LOGPROB_TILE) == wide
    assert trl_compat.fit_logprob_tile(49) == 49
    assert getattr(tile, trl_compat.LOGPROB_TILE) == 49
    assert trl_compat.fit_logprob_tile(0) == 49, "a nonsense size changes nothing"


def test_fit_logprob_tile_is_a_no_op_where_trl_has_no_tile(tile, monkeypatch):
    monkeypatch.delattr(tile, trl_compat.LOGPROB_TILE)
    assert trl_compat.fit_logprob_tile(49) is None
    assert not hasattr(tile, trl_compat.LOGPROB_TILE)


def test_a_tile_as_wide_as_the_vocabulary_gives_the_same_logprobs_entropy_and_gradients():
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction

    torch.manual_seed(0)
    n, hidden, vocab = 300, 32, 49
    h0 = torch.randn(n, hidden, dtype=torch.float32)
    w0 = torch.randn(vocab, hidden, dtype=torch.float32)
    targets = torch.randint(0, vocab, (n,))

    def run(width: int):
        h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        logp, entropy, *_ = ChunkedLogProbFunction.apply(h, w, None, targets, 0.7, width, None, 1.0, ("entropy",))
        (logp.sum() + 0.5 * entropy.sum()).backward()
        return logp.detach(), entropy.detach(), h.grad, w.grad

    wide, fitted, split = run(32768), run(vocab), run(16)  # TRL's tile; fitted; a vocabulary over several tiles
    ref = torch.log_softmax(h0 @ w0.T / 0.7, -1).gather(1, targets[:, None]).squeeze(1)
    torch.testing.assert_close(wide[0], ref)
    for other in (fitted, split):
        for a, b in zip(wide, other):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)  # float32, summed in another order
