"""Prompts are encoded once: the rollout keeps each distinct prompt's token ids (the tokenizer,
or the chat template's Jinja, runs once per prompt, not once a step), and what it hands out
cannot change what it keeps. On the embedded model's real tokenizer, text and chat prompts."""

from transformers import AutoTokenizer

from backend.training.tiny_model import ensure_model
from backend.training.trainer import RolloutFunc


class Counting:
    def __init__(self, tok):
        self.tok, self.calls = tok, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tok(*args, **kwargs)

    def apply_chat_template(self, *args, **kwargs):
        self.calls += 1
        return self.tok.apply_chat_template(*args, **kwargs)


def test_each_distinct_prompt_is_encoded_once_and_equal_to_the_tokenizers(tmp_path):
    path, _ = ensure_model(tmp_path / "models")
    tok = AutoTokenizer.from_pretrained(path)
    counting = Counting(tok)
    enc = RolloutFunc(None, counting, None)
    chat = [{"role": "user", "content": "q>"}]
    want_chat = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
    want_chat = list(want_chat["input_ids"] if hasattr(want_chat, "input_ids") else want_chat)
    for _ in range(3):
        assert enc.encode("a>") == tok("a>", add_special_tokens=False)["input_ids"]
        assert enc.encode(chat) == want_chat
    assert counting.calls == 2  # one each, not one a call
    ids = enc.encode("a>")
    ids.append(99)  # a caller changing its list changes nothing kept
    assert enc.encode("a>") == tok("a>", add_special_tokens=False)["input_ids"]
    assert enc.encode([{"role": "user", "content": "r>"}]) != enc.encode(chat)  # messages are keyed by their content
    enc.ENCODED_KEPT = 3
    for p in ("b>", "c>", "d>", "e>"):
        enc.encode(p)
    assert len(enc._encoded) <= 3  # bounded
