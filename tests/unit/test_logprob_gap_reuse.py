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
        self.rows = ids.size(0)
        return self._logps[:ids.size(0)], None


def _out(sampling, old=None):
    b, t = sampling.shape
    out = {"prompt_ids": torch.ones(b, 3, dtype=torch.long), "prompt_mask": torch.ones(b, 3, dtype=torch.long),
           "completion_ids": torch.ones(b, t, dtype=torch.long),
           "completion_mask": torch.tensor([[1] * t, [1] * (t - 1) + [0]] + [[1] * t] * (b - 2)),
           "sampling_per_token_logps": sampling}
    if old is not None:
        out["old_per_token_logps"] = old
    return out


@pytest.fixture
def trainer(monkeypatch):
    own = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -9.0], [-4.0, -4.0, -4.0]])
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


def test_limited_to_the_head_rows_the_engine_returned_log_probs_for(trainer):
    """A measuring step asks the engine for the first prompts' log-probs only: the rest are
    zeros, never compared, and the trainer's forward runs on the head rows alone."""
    sampling = torch.tensor([[-1.5, -2.0, -3.0], [-1.0, -2.0, 0.0], [0.0, 0.0, 0.0]])
    mean, mx, rows = logprob_gap(trainer, _out(sampling), rows=1, limit=2)
    assert trainer.calls == 1 and trainer.rows == 2
    assert (mean, mx) == pytest.approx((1.5 / 5, 1.0))  # row 3's |-4 - 0| would raise both
    old = torch.tensor([[-1.0, -2.5, -3.0], [-1.0, -2.0, -7.0], [-9.0, -9.0, -9.0]])
    assert logprob_gap(trainer, _out(sampling, old), limit=2)[:2] == pytest.approx((1.0 / 5, 0.5))
