"""The trainer-engine agreement reuses TRL's own pre-update log-probs where TRL computed them
(its importance-sampling correction), and makes its own forward pass only where TRL did not."""

import pytest

torch = pytest.importorskip("torch")

from backend.training import trl_compat  # noqa: E402
from backend.training.trainer import logprob_gap  # noqa: E402


class _Args:
    per_device_train_batch_size = 4


class _Trainer:
    args = _Args()

    def __init__(self, logps):
        self.calls = 0
        self._logps = logps

    def forward(self, model, ids, mask, keep, batch_size):
        self.calls += 1
        return self._logps, None


def _out(sampling, old=None):
    b, t = sampling.shape
    out = {"prompt_ids": torch.ones(b, 3, dtype=torch.long), "prompt_mask": torch.ones(b, 3, dtype=torch.long),
           "completion_ids": torch.ones(b, t, dtype=torch.long),
           "completion_mask": torch.tensor([[1] * t, [1] * (t - 1) + [0]]), "sampling_per_token_logps": sampling}
    if old is not None:
        out["old_per_token_logps"] = old
    return out


@pytest.fixture
def trainer(monkeypatch):
    own = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -9.0]])
    t = _Trainer(own)
    t.model = None
    monkeypatch.setattr(trl_compat, "LOGPS", "forward")
    return t


def test_without_trls_logprobs_it_runs_its_own_forward(trainer):
    sampling = torch.tensor([[-1.5, -2.0, -3.0], [-1.0, -2.0, 0.0]])
    mean, mx, rows = logprob_gap(trainer, _out(sampling), rows=1)
    assert trainer.calls == 1
    assert (mean, mx) == pytest.approx((1.5 / 5, 1.0))  # the masked last token (|-9 - 0|) is left out
    assert rows == [[-1.0, -2.0, -3.0]]


def test_with_trls_pre_update_logprobs_no_second_forward(trainer):
    sampling = torch.tensor([[-1.5, -2.0, -3.0], [-1.0, -2.0, 0.0]])
    old = torch.tensor([[-1.0, -2.5, -3.0], [-1.0, -2.0, -7.0]])
    mean, mx, rows = logprob_gap(trainer, _out(sampling, old), rows=2)
    assert trainer.calls == 0
    assert (mean, mx) == pytest.approx((1.0 / 5, 0.5))
    assert rows == [[-1.0, -2.5, -3.0], [-1.0, -2.0]]
