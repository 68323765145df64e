"""Log-likelihood scoring, as lm-evaluation-harness defines it: what the harness and the lm-eval adapter share.

A request is (context, continuation); `encode_pair` tokenizes it exactly as lm-eval's `hf` model does
with the checkpoint's own tokenizer (see `pipelines.evaluation.harness` for the definitions), and
`loglikelihoods` scores a list of them in batches. Both `pipelines.evaluation.harness` (local JSONL
tasks) and `pipelines.evaluation.lm_eval_adapter` (lm-eval's own tasks) call these, so the two score
every request the same way and neither imports the other.
"""

from __future__ import annotations

import sys

import torch

from pipelines.tokens.tokenizer import BOS, EOS, encode


def encode_pair(context: str, continuation: str, add_bos: bool = False) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-eval's `hf` model makes them: trailing whitespace of the
    context moves to the continuation, the whole string is encoded once and the continuation is what
    follows the context's own encoding. `add_bos`: the checkpoint's tokenizer policy (as trained)."""
    if not context:  # lm-eval: the prefix token (BOS) stands for an empty context
        return [BOS], encode([continuation], append_eos=False)[0]
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole, ctx = encode([context + continuation, context], append_eos=False)
    head = [BOS] if add_bos else []
    return head + ctx, whole[len(ctx):]


@torch.no_grad()
def loglikelihoods(model, pairs: list[tuple[str, str]], batch_size: int = 16, max_len: int | None = None,
                   progress: str | None = None, add_bos: bool = False) -> list[tuple[float, bool]]:
    """(sum log P(continuation | context) in nats, whether it is the greedy continuation) for each pair.

    Longest first, so each batch pads little and memory peaks at the start; contexts are cut from
    the left to fit `max_len` (the model's position limit by default). `add_bos`: see `encode_pair`."""
    device = next(model.parameters()).device
    max_len = max_len or model.config.max_position_embeddings
    encoded = []
    for ctx, cont in pairs:
        c, t = encode_pair(ctx, cont, add_bos)
        seq = (c + t)[-(max_len + 1):]
        encoded.append((seq, len(t)))
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    out: list[tuple[float, bool]] = [(0.0, False)] * len(encoded)
    model.eval()
    for _b, start in enumerate(range(0, len(order), batch_size)):
        idx = order[start:start + batch_size]
        width = len(encoded[idx[0]][0]) - 1
        inputs = torch.full((len(idx), width), EOS, dtype=torch.long)
        for row, i in enumerate(idx):
            seq = encoded[i][0][:-1]
            inputs[row, :len(seq)] = torch.tensor(seq)
        logprobs = torch.log_softmax(model(input_ids=inputs.to(device), use_cache=False).logits.float(), -1).cpu()
        for row, i in enumerate(idx):
            seq, n_cont = encoded[i]
            end = len(seq) - 1
            lp = logprobs[row, end - n_cont:end]
            target = torch.tensor(seq[-n_cont:])
            out[i] = (float(lp.gather(1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all()))
        if progress and sys.stderr.isatty():
            print(f"\r[eval] {progress}: {min(start + batch_size, len(order))}/{len(order)} requests",
                  end="", file=sys.stderr, flush=True)
    if progress and sys.stderr.isatty():
        print(file=sys.stderr)
    return out
