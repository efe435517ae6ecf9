"""A chat task for a real instruct model: short arithmetic questions, answered with the number alone.

The prompts are conversational (a list of messages, run through the model's chat template);
the `answer` column rides along and reaches the reward functions as a keyword argument, as
TRL passes every extra dataset column. Two reward functions with TRL's signature:

- `correct_answer`: 1.0 when the last number in the reply is the right result (so "7 + 5 =
  12" counts), else 0.0;
- `number_only`: 1.0 when the reply is just that number (an optional full stop allowed),
  else 0.0 — SmolLM2-135M-Instruct starts with replies like "7 + 5 = 12" or a sentence,
  so GRPO visibly changes how it answers.

Use it from a profile: `dataset = "backend.training.chat_task:dataset"`,
`reward_funcs = ["backend.training.chat_task:correct_answer", "backend.training.chat_task:number_only"]`.
"""

from __future__ import annotations

import random
import re

_NUMBER = re.compile(r"-?\d+")
_ONLY_NUMBER = re.compile(r"^\s*(-?\d+)\s*\.?\s*$")
TEMPLATES = (
    "What is {a} plus {b}?",
    "Compute {a} + {b}.",
    "How much is {a} + {b}?",
    "Add {a} and {b}.",
)
INSTRUCTION = " Reply with the number only."


def make_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        q = rng.choice(TEMPLATES).format(a=a, b=b) + INSTRUCTION
        rows.append({"prompt": [{"role": "user", "content": q}], "answer": str(a + b), "row_id": i})
    return rows


def dataset(n: int = 2000, seed: int = 0):
    """A `datasets.Dataset` of `n` questions (conversational `prompt`, `answer`, `row_id`)."""
    import datasets

    return datasets.Dataset.from_list(make_rows(n, seed))


def _text(completion) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return "".join(str(m.get("content", "")) for m in completion)
    return str(completion)


def correct_answer(prompts, completions, answer, **kwargs) -> list[float]:
    out = []
    for completion, want in zip(completions, answer):
        found = _NUMBER.findall(_text(completion))
        out.append(1.0 if found and found[-1] == str(want) else 0.0)
    return out


def number_only(prompts, completions, **kwargs) -> list[float]:
    return [1.0 if _ONLY_NUMBER.match(_text(c)) else 0.0 for c in completions]


correct_answer.reward_range = number_only.reward_range = (0.0, 1.0)  # shown on the console's reward chart
