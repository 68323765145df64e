"""Zamba2 models from YAML presets, built on transformers' `Zamba2ForCausalLM`.

Using the transformers class (rather than a private re-implementation) means every checkpoint the
trainer writes is a plain Hugging Face folder: `Zamba2ForCausalLM.from_pretrained(dir)` loads it,
`generate()` works, and lm-evaluation-harness can score it. Its pure-PyTorch Mamba2 path runs on CPU.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.tokens.tokenizer import BOS as BOS_ID
from pipelines.tokens.tokenizer import EOS as EOS_ID
from pipelines.tokens.tokenizer import VOCAB_SIZE
from pipelines.training import TrainError
from pipelines.training.presets import PRESETS, load_presets


def zamba2_config(preset: str, presets_file: Path = PRESETS):
    """A `Zamba2Config` for a named preset; `hybrid_every` expands into the layer pattern."""
    from transformers import Zamba2Config
    presets = load_presets(presets_file)
    if preset not in presets:
        raise ValueError(f"model preset {preset!r} not in {presets_file} (known: {', '.join(presets)})")
    kw = dict(presets[preset])
    every = kw.pop("hybrid_every")
    n = kw["num_hidden_layers"]
    kw["layers_block_type"] = ["hybrid" if (i + 1) % every == 0 else "linear_attention" for i in range(n)]
    return Zamba2Config(vocab_size=VOCAB_SIZE, bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID,
                        tie_word_embeddings=True, **kw)


def build_model(config, seed: int):
    """A freshly initialised model; the seed alone fixes every weight."""
    import torch
    from transformers import Zamba2ForCausalLM
    torch.manual_seed(seed)
    return Zamba2ForCausalLM(config)


def load_model(path: str | Path, device="cpu"):  # device: a torch.device or its name
    """A checkpoint's weights as a `Zamba2ForCausalLM` (the step folder, its model/, or an older
    checkpoint whose weights are only in model/)."""
    from transformers import Zamba2ForCausalLM
    path = Path(path)
    folder = path if (path / "config.json").is_file() or not (path / "model").is_dir() else path / "model"
    if not (folder / "config.json").is_file():
        raise TrainError(f"not a checkpoint: {path} (a checkpoint folder holds model/ and state.pt, e.g. "
                         "runs/train-local/checkpoints/step_0000300)")
    return Zamba2ForCausalLM.from_pretrained(folder).to(device)


def count_parameters(model) -> int:
    """Unique parameters (shared blocks and tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def flops_per_token(config, n_params: int, seq_len: int) -> float:
    """Training FLOPs per token: 6 x parameters (the matmuls, forward + backward) plus attention's
    score and value products (12 x layers x hidden x context, PaLM appendix B) on the hybrid layers."""
    hybrid = sum(t == "hybrid" for t in config.layers_block_type)
    return 6.0 * n_params + 12.0 * hybrid * config.attention_hidden_size * seq_len
