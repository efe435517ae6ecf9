"""The embedded default task: "repeat". Verifiable, tiny, and GRPO visibly learns it on CPU.

Prompt `c>` (one lower-case letter and `>`); the right completion is the letter four times
and then end-of-sequence: `cccc<eos>`. Two reward functions in TRL's signature:

- `char_match`: share of the first four completion characters equal to the letter;
- `clean_stop`: 1.0 when the completion is exactly four characters and ended on its own
  (end-of-sequence before `max_tokens`), else 0.0.

A random model scores ~0.03; a few supervised warm-up steps on correct examples bring the
group mean to roughly 0.2-0.35, and GRPO then takes it past 0.75 within ~100 steps.
"""

from __future__ import annotations

import random
import string

TARGET_LEN = 4
LETTERS = string.ascii_lowercase


def make_prompt(letter: str) -> str:
    return f"{letter}>"


def target(letter: str) -> str:
    return letter * TARGET_LEN


def _letter(prompt: str) -> str:
    return prompt[0] if prompt else ""


def _text(completion) -> str:
    # conversational completions are [{"role": "assistant", "content": ...}]
    if isinstance(completion, list):
        return completion[-1].get("content", "") if completion else ""
    return completion


def char_match(prompts, completions, **kwargs) -> list[float]:
    """Share of the first four characters equal to the prompt's letter."""
    out = []
    for prompt, completion in zip(prompts, completions):
        letter, text = _letter(_text(prompt)), _text(completion)
        out.append(sum(1 for ch in text[:TARGET_LEN] if ch == letter) / TARGET_LEN)
    return out


def clean_stop(prompts, completions, completion_ids=None, **kwargs) -> list[float]:
    """1.0 when the completion is exactly four characters long and was not cut at max_tokens."""
    truncated = kwargs.get("truncated") or [False] * len(completions)
    return [
        1.0 if len(_text(c)) == TARGET_LEN and not t else 0.0
        for c, t in zip(completions, truncated)
    ]


char_match.reward_range = clean_stop.reward_range = (0.0, 1.0)  # shown on the console's reward chart
REWARD_FUNCS = (char_match, clean_stop)
REWARD_WEIGHTS = (0.75, 0.25)


def prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [make_prompt(rng.choice(LETTERS)) for _ in range(n)]


def dataset(n: int = 4096, seed: int = 0):
    """A `datasets.Dataset` with a `prompt` column (plain text prompts)."""
    from datasets import Dataset

    return Dataset.from_dict({"prompt": prompts(n, seed)})


def warmup_examples(n: int, seed: int = 1, correct_fraction: float = 0.0) -> list[tuple[str, str]]:
    """(prompt, completion) pairs for the supervised warm-up phase.

    With `correct_fraction=0` the completions are four *random* letters: the warm-up teaches
    only the format (four characters, then stop), and GRPO has to discover the rule.
    """
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        letter = rng.choice(LETTERS)
        if rng.random() < correct_fraction:
            answer = target(letter)
        else:
            answer = "".join(rng.choice(LETTERS) for _ in range(TARGET_LEN))
        out.append((make_prompt(letter), answer))
    return out
