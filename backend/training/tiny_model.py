"""Build a small Qwen2-shaped model and a character-level tokenizer, locally, with no hub.

The result is an ordinary Hugging Face model directory (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json) that transformers, TRL and vLLM load like any
other local path. Attention head size is 32: vLLM's CPU backend supports only
32/64/80/96/... head sizes.
"""

from __future__ import annotations

import json
import string
from dataclasses import asdict, dataclass
from pathlib import Path

BUILD_FORMAT = 2  # bump when the built files change (cache key)
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
ALPHABET = string.ascii_lowercase + string.digits + " >=:+-.,?"


@dataclass(frozen=True)
class TinyModelSpec:
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2  # head_dim = hidden_size / num_heads = 64
    num_kv_heads: int = 1
    intermediate_size: int = 256
    max_position_embeddings: int = 64
    seed: int = 0

    def key(self) -> str:
        return (f"v{BUILD_FORMAT}-qwen2-h{self.hidden_size}-l{self.num_layers}-a{self.num_heads}-kv{self.num_kv_heads}"
                f"-i{self.intermediate_size}-p{self.max_position_embeddings}-s{self.seed}")


def build_tokenizer(out_dir: Path):
    """A char-level fast tokenizer (tokenizers library), saved as a transformers tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in ALPHABET:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        padding_side="left",
    )
    # a minimal chat template, so conversational datasets work on the tiny model too
    fast.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    fast.save_pretrained(out_dir)
    return fast


def build_model(out_dir: Path, spec: TinyModelSpec = TinyModelSpec()) -> Path:
    """Write a randomly initialised Qwen2 model and its tokenizer to `out_dir`; return it."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out_dir)
    torch.manual_seed(spec.seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "rlc_spec.json").write_text(json.dumps(asdict(spec)))
    return out_dir


def is_complete(model_dir: Path) -> bool:
    need = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "rlc_spec.json")
    return all((Path(model_dir) / f).exists() for f in need)


def ensure_model(cache_dir: Path, spec: TinyModelSpec = TinyModelSpec()) -> tuple[Path, bool]:
    """The cached model dir for `spec`, built if missing or incomplete. Returns (path, built_now)."""
    import shutil
    import tempfile

    out = Path(cache_dir) / spec.key()
    if is_complete(out):
        return out, False
    # each process builds in a folder of its own and renames it into place: two runs started at
    # once on a fresh data dir must not build into (and delete) the same folder
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        build_model(tmp, spec)
        if is_complete(out):  # another process finished first: use its copy
            return out, False
        if out.exists():
            shutil.rmtree(out, ignore_errors=True)  # an incomplete leftover
        try:
            tmp.rename(out)
        except OSError:
            if not is_complete(out):
                raise
            return out, False
        return out, True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
