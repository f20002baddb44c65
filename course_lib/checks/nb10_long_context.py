"""Checkers for notebook 10 (how long a context fits on a T4): the logits' memory, plain and chunked, and the
longest sequence that fits, checked against ``longctx.predict_peak`` / ``longctx.predicted_longest`` (arithmetic
only), and a chunked cross-entropy checked against ``F.cross_entropy`` on small random fp32 tensors (CPU, a
fraction of a second)."""

from __future__ import annotations

import math

import torch
from torch.overrides import TorchFunctionMode

from .core import _call, checker, fail, passed

GiB = 2**30
IGNORE_INDEX = -100


@checker
def check_logit_bytes(fn) -> None:
    """``fn(seq_len, vocab, chunk=None)`` -> bytes the loss holds for the logits of one sequence at its peak:
    the plain loss (``chunk=None``) or the chunked one (``chunk`` tokens at a time), as ``longctx.predict_peak``
    counts them (``details["loss_logits"]``)."""
    from course_lib import longctx, models

    cases = [("llama-3.1-8b", n, chunk) for n in (1000, 4096, 16384) for chunk in (None, 1024)]
    cases += [("llama-3.1-8b", 512, 1024), ("llama-3.1-8b", 4096, 256), ("llama-2-7b", 2048, None),
              ("llama-2-7b", 4096, 1024)]
    for shape, n, chunk in cases:
        config = models.synthetic_config(shape)
        techniques = ("no_lora_dropout",) if chunk is None else ("chunked_loss",)
        kwargs = {} if chunk is None else {"loss_chunk": chunk}
        want = longctx.predict_peak(config, techniques, n, **kwargs).details["loss_logits"]
        got = _call(fn, n, config.vocab_size, chunk, name="logit_bytes")
        if not isinstance(got, (int, float)) or abs(float(got) - want) > 1e-9 * want:
            how = "plain loss" if chunk is None else f"chunked loss, chunk={chunk:,}"
            seen = f"{float(got) / GiB:.3f} GiB" if isinstance(got, (int, float)) else repr(got)
            fail(f"logit_bytes({n:,}, {config.vocab_size:,}, {chunk!r}) ({shape}, {how}) returned {seen}",
                 "the logits are one number per token per vocabulary entry; count how many of them exist at once, "
                 "then how many bytes each one costs. The plain loss keeps every token's; the chunked one only "
                 "one chunk's.",
                 "a chunk never holds more tokens than the sequence has: a sequence shorter than one chunk is one "
                 "short chunk. Return a number of bytes (not GiB).",
                 "plain: three fp32 tensors of tokens x vocabulary are alive at the loss's backward (12 bytes per "
                 "logit); chunked: the course's model counts 8 bytes per logit of one chunk.")
    config = models.synthetic_config("llama-3.1-8b")
    plain, chunked = (_call(fn, 16384, config.vocab_size, c, name="logit_bytes") for c in (None, 1024))
    passed(f"logit_bytes agrees with longctx.predict_peak (8B and Llama-2-7B shapes, 512 to 16,384 tokens): at "
           f"16,384 tokens the plain loss holds {plain / GiB:.2f} GiB of logits, the chunked one "
           f"{chunked / GiB:.2f} GiB.")


@checker
def check_longest_fitting_length(fn) -> None:
    """``fn(predict, available, step, limit)`` -> the longest multiple of ``step`` (at most ``limit``) whose
    predicted peak ``predict(length)`` is at most ``available`` bytes; 0 when not even ``step`` fits. Checked
    against ``longctx.predicted_longest`` for each step of ``longctx.STEPS`` at a T4's usable memory."""
    from course_lib import longctx, memory, models

    t4 = memory.usable_bytes("T4")
    cases = [("llama-3.1-8b", name, prep, techniques, t4, 256) for name, prep, techniques in longctx.STEPS]
    cases += [("llama-3.1-8b", "+ tiled mlp", "lean", longctx.TECHNIQUES, t4, 1024),
              ("llama-3.1-8b", "lean", "lean", (), 4 * GiB, 256),  # not even 256 tokens fit
              ("llama-2-7b", "+ tiled mlp", "lean", longctx.TECHNIQUES, t4, 256)]  # all of its 4,096 positions
    calls, positions = [], models.synthetic_config("llama-3.1-8b").max_position_embeddings
    for shape, name, prep, techniques, available, step in cases:
        config = models.synthetic_config(shape)
        limit = config.max_position_embeddings

        def predict(n, config=config, techniques=techniques, prep=prep, limit=limit, step=step):
            if isinstance(n, bool) or not isinstance(n, int) or n < step or n % step or n > limit:
                fail(f"your function asked predict({n!r}); it takes a length in tokens, a multiple of step={step} "
                     f"between {step} and limit={limit:,}",
                     "only ask about the lengths you could return: step, 2*step, ... up to limit.",
                     "keep lengths whole numbers: in a bisection, search over k (the length is k * step), with "
                     "integer division.")
            calls[-1] += 1
            return longctx.predict_peak(config, techniques, n, prep=prep).total_bytes

        calls.append(0)
        got = _call(fn, predict, available, step, limit, name="longest_fitting_length")
        want = longctx.predicted_longest(config, techniques, prep=prep, available=available, step=step, limit=limit)
        if got != want:
            near = ", ".join(f"{n:,} tokens: {longctx.predict_peak(config, techniques, n, prep=prep).total_bytes / GiB:.2f} GiB"
                             for n in sorted({want, want + step, got if isinstance(got, int) else want})
                             if isinstance(n, int) and step <= n <= limit)
            fail(f"{shape}, step {name!r}, {available / GiB:.1f} GiB available, step={step}, limit={limit:,}: you "
                 f"say {got!r}" + (f" (predicted peaks: {near})" if near else ""),
                 "a length fits when predict(length) <= available; longer sequences need more memory, so the "
                 "lengths that fit are all those up to one length: find the last one.",
                 "try only multiples of step, never above limit; return 0 when not even step tokens fit, and limit "
                 "itself when it fits.",
                 "a bisection keeps two bounds, a number of steps known to fit (start: 0) and one known not to "
                 "(start: one more than limit allows), and halves the gap until they are neighbours.")
    passed(f"longest_fitting_length agrees with longctx.predicted_longest for every step of longctx.STEPS on a T4 "
           f"and {len(cases) - len(longctx.STEPS)} edge cases, with {max(calls)} predictions at most per search "
           f"(a bisection over the 8B shape's {positions:,} positions in steps of 256 needs "
           f"{math.ceil(math.log2(positions // 256 + 1))}).")


class _WidestLogits(TorchFunctionMode):
    """Records the most tokens' logits (tensors whose last dimension is the vocabulary) a function builds at once."""

    def __init__(self, vocab: int, weight: torch.Tensor):
        super().__init__()
        self.vocab, self.weight, self.rows = vocab, weight, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[-1] == self.vocab \
                    and t.untyped_storage().data_ptr() != self.weight.untyped_storage().data_ptr():
                self.rows = max(self.rows, t.numel() // self.vocab)  # the head weight's own views do not count
        return out


@checker
def check_chunked_loss(fn) -> None:
    """``fn(hidden, weight, targets, chunk)`` -> the mean cross-entropy of ``hidden @ weight.T`` against ``targets``
    (``IGNORE_INDEX`` ignored), building at most ``chunk`` tokens' logits at a time; its value and its gradients
    (through autograd) must equal ``F.cross_entropy``'s on the full logits, in fp32."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(10)
    tokens, h, vocab = 45, 8, 50
    for chunk, masked in ((10, 10), (16, 3), (45, 0), (64, 5)):  # the first chunk all masked; a short last chunk
        hidden = torch.randn(tokens, h, generator=g)
        weight = torch.randn(vocab, h, generator=g) / h**0.5
        targets = torch.randint(0, vocab, (tokens,), generator=g)
        targets[:masked] = IGNORE_INDEX  # a masked prompt, as in a chat fine-tune
        ref_h, ref_w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        ref = F.cross_entropy(ref_h @ ref_w.t(), targets, ignore_index=IGNORE_INDEX)
        ref.backward()
        mine_h, mine_w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        watch = _WidestLogits(vocab, mine_w)
        with watch:
            got = _call(fn, mine_h, mine_w, targets.clone(), chunk, name="chunked_loss")
        where = f"{tokens} tokens, vocabulary {vocab}, chunk={chunk}, {masked} masked targets (-100) first"
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            fail(f"chunked_loss ({where}) returned {type(got).__name__}"
                 + (f" of shape {tuple(got.shape)}" if isinstance(got, torch.Tensor) else ""),
                 "return the loss as a one-number tensor, like F.cross_entropy does (not a float: the backward "
                 "pass needs the tensor).", "keep the running total a tensor: no .item() inside the loop.")
        if watch.rows > chunk:
            fail(f"chunked_loss ({where}) built the logits of {watch.rows} tokens at once; chunk={chunk} allows "
                 f"{chunk}",
                 "the point is never to hold every token's logits: slice the hidden states into pieces of chunk "
                 "rows and compute the logits of one piece at a time.",
                 "a loop over start = 0, chunk, 2*chunk, ...: hidden[start:start + chunk] times the head's weight "
                 "(transposed) is one chunk's logits; the targets are sliced the same way.")
        if torch.isnan(got).any():
            fail(f"chunked_loss ({where}) returned nan (the plain loss is {ref.item():.4f})",
                 "a chunk whose targets are all -100 has no token to average over: its mean is 0/0.",
                 "add up each chunk's loss (reduction='sum') and divide once, at the end, by the number of tokens "
                 "that are not -100.")
        if not got.requires_grad:
            fail(f"chunked_loss ({where}) returned a loss without a gradient",
                 "autograd must see every step from hidden and weight to the loss: no .item(), .detach() or "
                 "torch.no_grad() on the way.", "start the total at 0 (or a tensor) and add tensors to it.")
        if abs(got.item() - ref.item()) > 1e-5 * max(1.0, abs(ref.item())):
            fail(f"chunked_loss ({where}) = {got.item():.6f}; the plain loss on the full logits is {ref.item():.6f}",
                 "the plain loss is a mean over the tokens whose target is not -100: all the tokens of all the "
                 "chunks, not a mean of the chunks' means (the last chunk is shorter, and masked tokens count in "
                 "no chunk).",
                 "add up each chunk's loss with reduction='sum' and ignore_index=-100, then divide once by the "
                 "number of targets that are not -100.")
        got.backward()
        for what, mine, theirs in (("hidden", mine_h, ref_h), ("weight", mine_w, ref_w)):
            if mine.grad is None or not torch.allclose(mine.grad, theirs.grad, atol=1e-6, rtol=1e-4):
                err = "none" if mine.grad is None else f"{(mine.grad - theirs.grad).abs().max().item():.3g}"
                fail(f"chunked_loss ({where}): the loss is right but the gradient of {what} differs from the plain "
                     f"loss's (max abs difference {err})",
                     "the gradient flows through every chunk's logits back to hidden and weight: do not detach or "
                     "copy them into a new tensor (torch.tensor(...), .data) on the way.",
                     "each chunk's part of the loss must be computed from slices of the hidden and weight tensors "
                     "you were given, so autograd can follow it.")
    passed("chunked_loss gives F.cross_entropy's loss and gradients on the full logits (chunks that do not divide "
           "the sequence, masked targets, a chunk longer than the sequence) and never builds more than one chunk's "
           "logits.")
