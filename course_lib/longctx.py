"""Long contexts on a small GPU (notebook 10): where the memory of one long sequence goes, and taking it back.

At a few thousand tokens the weights of a 4-bit 8B model are no longer what decides whether a step fits: the
logits (tokens x vocabulary, in fp32, with their gradient) and the activations are. Each technique here takes one
of those parts back, and each is a small piece tested to give the plain path's loss and adapter gradients:

* ``repeat_kv``: attention whose memory grows with n, not n^2, on every GPU a T4 stands for. Llama-3's 8 key/value
  heads serve 32 query heads (grouped-query attention); transformers hands that to ``scaled_dot_product_attention``
  with ``enable_gqa=True``, which only the flash kernel accepts, and a T4 has no flash kernel: SDPA falls back to
  its math kernel, which stores every tokens x tokens score. Repeating K and V to 32 heads first lets the
  memory-efficient kernel (which a T4 has) run instead: 12 more bytes per token and layer, not n more.
* ``chunked_cross_entropy``: the loss without the full logits. Tokens go through the output head in chunks; each
  chunk's logits exist only while that chunk is computed, and are recomputed in the backward pass.
* ``offload_to_cpu``: the checkpointed layer inputs (what gradient checkpointing keeps: one tokens x hidden tensor
  per decoder layer) move to CPU memory in the forward pass and come back, one layer ahead, in the backward pass.
  Built on ``torch.autograd.graph.saved_tensors_hooks`` like PyTorch's ``save_on_cpu``, with the copies on a side
  CUDA stream so they overlap with compute.
* ``no_lora_dropout``: not an equivalence but a choice. LoRA dropout makes each adapted layer keep its own dropped
  copy of its input (and the mask) for the backward pass; with dropout 0 the adapter reuses the tensor the frozen
  layer already keeps.
* ``tiled_mlp``: the MLP runs over the sequence in chunks, each checkpointed, so its widest tensors
  (tokens x intermediate, four of them) exist for one chunk at a time.
* ``chunked_norm``: RMSNorm keeps its 16-bit input (which exists anyway) instead of an fp32 copy, and computes its
  fp32 forward and backward a chunk of tokens at a time, so its five hidden-sized fp32 temporaries exist for one
  chunk. What Arctic Long Sequence Training does to every part of a layer that treats tokens one by one.

``forward_backward`` runs one training step's forward and backward with any of them (``TECHNIQUES``, applied in
that order), ``predict_peak`` predicts its peak memory from ``course_lib.memory``'s model, technique by technique,
and ``longest_fitting`` searches the longest sequence that fits with few probes.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import replace

import torch
import torch.nn.functional as F

from course_lib import memory

TECHNIQUES = ("repeat_kv", "chunked_loss", "offload", "no_lora_dropout", "tiled_mlp", "chunked_norm")
LOSS_IMPLS = ("plain", "chunked", "cce", "liger")
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
IGNORE_INDEX = -100
DEFAULT_LOSS_CHUNK = 1024  # tokens per chunk of logits: 1024 x 128,256 x 8 bytes = 1 GB at most at a time
DEFAULT_MLP_CHUNK = 4096  # tokens per MLP tile
DEFAULT_NORM_CHUNK = 4096  # tokens per RMSNorm chunk: 4096 x 4096 x 4 bytes x 5 temporaries = 320 MiB at most
REPEAT_KV_ATTENTION = "sdpa_repeat_kv"  # the name course_lib registers its attention function under
# The math kernel (what SDPA falls back to) upcasts fp16 to fp32 and keeps, in the backward pass of one recomputed
# layer, score-sized fp32 tensors (heads x tokens x tokens): the softmax it saved, its gradient, the softmax
# backward's product and the scores' gradient. 4 is what that count says and what the 8B shape's measured peaks at
# 4,096 and 8,192 tokens give (resources/measurements/long_context.csv, kind "kernel-table").
MATH_SCORE_COPIES = 4
OFFLOAD_MIN_BYTES = 1 << 20  # smaller saved tensors stay on the GPU: not worth a copy
# Layer inputs on the GPU at once while offloading: the one in use, the one prefetched, and copies whose memory the
# allocator can reuse only once the side stream has finished with them (2 to 5 in the H100 traces; 4 predicted).
OFFLOAD_GPU_COPIES = 4


class SequenceTooLongError(ValueError):
    """A sequence is longer than the model's position limit (``max_position_embeddings``)."""


class OffloadMemoryError(MemoryError):
    """Offloading the checkpointed activations needs more CPU memory than is available."""


# ------------------------------------------------------------------------------------------------- checks
def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer (tokens per chunk), got {value!r}. Chunks need not "
                         "divide the sequence: the last one is shorter.")
    return value


def check_techniques(techniques) -> tuple[str, ...]:
    techniques = tuple(techniques)
    unknown = [t for t in techniques if t not in TECHNIQUES]
    if unknown:
        raise ValueError(f"unknown technique(s) {unknown}; choose from {TECHNIQUES}.")
    return tuple(t for t in TECHNIQUES if t in techniques)


def causal_lm_parts(model):
    """``(decoder, lm_head)`` of a Hugging Face causal LM of the Llama family, plain or wrapped by PEFT."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    model_type = getattr(getattr(base, "config", None), "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES or not hasattr(base, "model") or not hasattr(base, "lm_head"):
        raise ValueError(f"course_lib.longctx supports causal LMs of the Llama family {SUPPORTED_MODEL_TYPES} (a "
                         f"decoder .model with .layers[i].mlp and an output head .lm_head); got model_type="
                         f"{model_type!r} ({type(base).__name__}). Use a Llama-family model.")
    return base.model, base.lm_head


def check_length(config, seq_len: int) -> None:
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and seq_len > limit:
        raise SequenceTooLongError(
            f"a sequence of {seq_len:,} tokens is longer than this model's position limit of {limit:,} "
            "(config.max_position_embeddings): its rotary embeddings were not trained that far. Use a shorter "
            "sequence, or a model trained for long contexts (e.g. Llama-3.1: 131,072).")


# ------------------------------------------------------------------------------------------- chunked loss
class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets``, ``chunk`` rows at a time.

    Forward keeps only ``hidden`` (and the head weight it already has); backward recomputes each chunk's logits,
    turns them into softmax - one_hot in place, and multiplies back. The matmul runs in ``dtype`` and the softmax
    in fp32, as Hugging Face's loss does (16-bit logits, cast to fp32 before the cross-entropy)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk, dtype):
        valid = targets != IGNORE_INDEX
        count = valid.sum().clamp_min(1)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        w = weight.to(dtype)
        for start in range(0, hidden.shape[0], chunk):
            logits = (hidden[start:start + chunk].to(dtype) @ w.t()).float()
            t = targets[start:start + chunk]
            total += F.cross_entropy(logits, t, ignore_index=IGNORE_INDEX, reduction="sum")
            del logits
        ctx.save_for_backward(hidden, weight, targets)
        ctx.chunk, ctx.dtype, ctx.count = chunk, dtype, count
        return total / count

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, targets = ctx.saved_tensors
        w = weight.to(ctx.dtype)
        scale = grad_loss.float() / ctx.count
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        for start in range(0, hidden.shape[0], ctx.chunk):
            h = hidden[start:start + ctx.chunk].to(ctx.dtype)
            t = targets[start:start + ctx.chunk]
            g = (h @ w.t()).float()
            g.sub_(torch.logsumexp(g, dim=-1, keepdim=True)).exp_()  # softmax, in place
            rows = torch.arange(t.shape[0], device=t.device)
            valid = t != IGNORE_INDEX
            g[rows[valid], t[valid]] -= 1.0
            g.mul_((valid.float() * scale).unsqueeze(1))
            g = g.to(ctx.dtype)
            if grad_hidden is not None:
                grad_hidden[start:start + ctx.chunk] = (g @ w).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += (g.t() @ h).float()
            del g
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                          chunk_size: int = DEFAULT_LOSS_CHUNK, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Mean cross-entropy of the logits ``hidden @ weight.T`` (``hidden``: tokens x hidden, ``targets``: tokens,
    ``IGNORE_INDEX`` ignored) without ever holding more than ``chunk_size`` tokens' logits. ``dtype``: of the
    matmul (default: the autocast dtype when autocast is on, else ``hidden``'s)."""
    _positive_int(chunk_size, "chunk_size")
    if dtype is None:
        dtype = _autocast_dtype(hidden.device) or hidden.dtype
    return _ChunkedCrossEntropy.apply(hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1),
                                      chunk_size, dtype)


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Position t predicts token t+1 (what Hugging Face's causal LM loss does): labels moved left, -100 last."""
    return F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]


def head_loss(hidden: torch.Tensor, lm_head, labels: torch.Tensor, impl: str = "plain", *,
              chunk_size: int = DEFAULT_LOSS_CHUNK) -> torch.Tensor:
    """The causal LM loss from the decoder's last hidden states, four ways: ``plain`` (Hugging Face's: the full
    logits), ``chunked`` (``chunked_cross_entropy``), ``cce`` (Apple's cut-cross-entropy) and ``liger``
    (liger-kernel's fused linear cross-entropy); the last two are Triton kernels, so CUDA only."""
    if impl not in LOSS_IMPLS:
        raise ValueError(f"unknown loss implementation {impl!r}; choose one of {LOSS_IMPLS}.")
    targets = shift_labels(labels).reshape(-1)
    h = hidden.reshape(-1, hidden.shape[-1])
    if impl == "plain":
        logits = lm_head(h).float()
        return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
    if impl == "chunked":
        return chunked_cross_entropy(h, lm_head.weight, targets, chunk_size=chunk_size)
    if h.device.type != "cuda":
        raise RuntimeError(f"the {impl!r} loss is a Triton kernel and needs a CUDA GPU; on a CPU use 'chunked'.")
    dtype = _autocast_dtype(h.device) or h.dtype
    h, w = h.to(dtype), lm_head.weight.to(dtype)
    if impl == "cce":
        from cut_cross_entropy import linear_cross_entropy

        return linear_cross_entropy(h, w, targets, ignore_index=IGNORE_INDEX)
    from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

    return LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX)(w, h, targets)


# -------------------------------------------------------------------------------------- offload to CPU
class offload_to_cpu(torch.autograd.graph.saved_tensors_hooks):
    """Inside this context, tensors that autograd saves for the backward pass are kept in CPU memory.

    Wrapped around a forward pass with gradient checkpointing, what autograd saves outside the checkpointed layers
    is each layer's input (the checkpoint) and the final norm's input: those move to (pinned) CPU memory. On CUDA
    the copy runs on a side stream, so the next layer computes while the last one's input travels; in the
    backward pass, fetching one saved tensor starts fetching the one saved before it (the next one backward will
    need). Parameters and tensors under ``min_bytes`` stay where they are; a tensor saved twice is copied once."""

    def __init__(self, min_bytes: int = OFFLOAD_MIN_BYTES, pin_memory: bool = True):
        self.min_bytes, self.pin_memory = min_bytes, pin_memory
        self.entries: list[dict] = []  # in the order they were saved
        self._by_tensor: dict[int, tuple[weakref.ref, dict]] = {}
        self.offloaded_bytes = 0
        self._stream = None
        super().__init__(self._pack, self._unpack)

    def __enter__(self):
        super().__enter__()
        return self

    def _side_stream(self, device):
        if device.type == "cuda" and self._stream is None:
            self._stream = torch.cuda.Stream(device)
        return self._stream

    def _pack(self, tensor: torch.Tensor):
        nbytes = tensor.numel() * tensor.element_size()
        if isinstance(tensor, torch.nn.Parameter) or nbytes < self.min_bytes or tensor.is_sparse:
            return tensor
        seen = self._by_tensor.get(id(tensor))
        if seen is not None and seen[0]() is tensor:
            return seen[1]
        cuda = tensor.device.type == "cuda"
        cpu = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=cuda and self.pin_memory)
        entry = {"device": tensor.device, "cpu": cpu, "index": len(self.entries), "gpu": None, "event": None}
        if cuda:
            stream = self._side_stream(tensor.device)
            stream.wait_stream(torch.cuda.current_stream(tensor.device))  # the tensor is computed
            with torch.cuda.stream(stream):
                cpu.copy_(tensor, non_blocking=self.pin_memory)
            tensor.record_stream(stream)  # the allocator may not reuse its memory before the copy is done
        else:
            cpu.copy_(tensor)
        self.entries.append(entry)
        self._by_tensor[id(tensor)] = (weakref.ref(tensor), entry)
        self.offloaded_bytes += nbytes
        return entry

    def _fetch(self, entry: dict) -> None:
        """Start copying ``entry`` back to its device (on the side stream when on CUDA)."""
        if entry["gpu"] is not None or entry["cpu"] is None:
            return
        device = entry["device"]
        if device.type == "cuda":
            stream = self._side_stream(device)
            with torch.cuda.stream(stream):  # the side stream also ordered the forward copy before this one
                entry["gpu"] = entry["cpu"].to(device, non_blocking=self.pin_memory)
                entry["event"] = torch.cuda.Event()
                entry["event"].record(stream)
        else:
            entry["gpu"] = entry["cpu"].to(device)

    def _unpack(self, packed):
        if isinstance(packed, torch.Tensor):
            return packed
        self._fetch(packed)
        tensor, event = packed["gpu"], packed["event"]
        packed["gpu"] = packed["event"] = None  # autograd holds it now; dropped as soon as backward is done with it
        if event is not None:
            current = torch.cuda.current_stream(packed["device"])
            current.wait_event(event)
            tensor.record_stream(current)
        if packed["index"] > 0:  # backward goes from the last layer to the first: prefetch the one before
            self._fetch(self.entries[packed["index"] - 1])
        return tensor


def offload_bytes(config, seq_len: int, batch_size: int = 1, residual_bytes: int = 2) -> int:
    """CPU memory that ``offload_to_cpu`` fills in one step: every layer's input, plus the final norm's fp32 input."""
    n = batch_size * seq_len
    return config.num_hidden_layers * n * config.hidden_size * residual_bytes + n * config.hidden_size * 4


def check_offload_ram(config, seq_len: int, batch_size: int = 1, residual_bytes: int = 2,
                      available: int | None = None) -> int:
    """Raise ``OffloadMemoryError`` when the CPU cannot hold what offloading needs; return the bytes needed."""
    need = offload_bytes(config, seq_len, batch_size, residual_bytes)
    if available is None:
        import psutil

        available = psutil.virtual_memory().available
    if need > 0.9 * available:
        raise OffloadMemoryError(
            f"offloading the checkpointed activations of {batch_size} x {seq_len:,} tokens needs "
            f"{need / memory.GiB:.1f} GiB of CPU memory (pinned), but only {available / memory.GiB:.1f} GiB is "
            "available. Use a shorter sequence, free CPU memory, or train without 'offload'.")
    return need


# ------------------------------------------------------------------------------------------ LoRA dropout
def lora_dropout(model) -> float:
    """The largest LoRA dropout probability in ``model`` (0.0 if it has none)."""
    ps = [m.p for name, m in model.named_modules() if ".lora_dropout." in f".{name}." and hasattr(m, "p")]
    return max(ps, default=0.0)


def remove_lora_dropout(model) -> int:
    """Replace every LoRA dropout of ``model`` by ``nn.Identity`` (what ``LoraConfig(lora_dropout=0.0)`` builds);
    returns how many were replaced."""
    replaced = 0
    for name, module in model.named_modules():
        if name.endswith("lora_dropout") and isinstance(module, torch.nn.ModuleDict):
            for key in list(module.keys()):
                if not isinstance(module[key], torch.nn.Identity):
                    module[key] = torch.nn.Identity()
                    replaced += 1
    return replaced


# ------------------------------------------------------------------------------------------------ tiled MLP
def _tiled_forward(mlp_forward, chunk: int, x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] <= chunk:
        return mlp_forward(x)
    from torch.utils.checkpoint import checkpoint

    parts = [checkpoint(mlp_forward, part, use_reentrant=False) for part in x.split(chunk, dim=1)]
    return torch.cat(parts, dim=1)


@contextlib.contextmanager
def tiled_mlp(model, chunk_size: int = DEFAULT_MLP_CHUNK):
    """Inside this context every decoder layer's MLP runs over the sequence ``chunk_size`` tokens at a time, each
    tile checkpointed: the MLP keeps only its input for the backward pass and recomputes one tile at a time.
    Keep the context open through ``backward()``: gradient checkpointing reruns the layers there."""
    _positive_int(chunk_size, "chunk_size")
    decoder, _ = causal_lm_parts(model)
    mlps = [layer.mlp for layer in decoder.layers]
    for mlp in mlps:
        mlp.forward = lambda x, f=mlp.forward: _tiled_forward(f, chunk_size, x)
    try:
        yield
    finally:
        for mlp in mlps:
            del mlp.forward  # back to the class's forward


# ------------------------------------------------------------------------------------- attention on a T4
def sdpa_repeat_kv(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, is_causal=None,
                   **kwargs):
    """A transformers attention function: ``scaled_dot_product_attention`` with K and V repeated to the query's
    heads, so SDPA gets equal head counts and no ``enable_gqa``, which the memory-efficient kernel (a T4's O(n)
    one) refuses. ``query``: (batch, heads, tokens, head_dim); ``key``/``value``: (batch, kv_heads, tokens,
    head_dim); query head j uses key/value head j // (heads / kv_heads), as in transformers' ``repeat_kv``."""
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    if attention_mask is not None and attention_mask.ndim == 4:
        attention_mask = attention_mask[:, :, :, : key.shape[-2]]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(causal and attention_mask is None and query.shape[2] > 1)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                         scale=scaling, is_causal=causal)
    return out.transpose(1, 2).contiguous(), None


def _register_repeat_kv() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(REPEAT_KV_ATTENTION, sdpa_repeat_kv)
    AttentionMaskInterface.register(REPEAT_KV_ATTENTION, sdpa_mask)  # the masks sdpa gets (None when causal)


@contextlib.contextmanager
def repeat_kv_attention(model):
    """Inside this context the model's attention layers call ``sdpa_repeat_kv`` instead of transformers' sdpa.
    Keep it open through ``backward()``: gradient checkpointing reruns the attention there."""
    decoder, _ = causal_lm_parts(model)
    config = decoder.config
    before = config._attn_implementation
    if before not in ("sdpa", REPEAT_KV_ATTENTION):
        raise ValueError(f"'repeat_kv' replaces sdpa attention, but this model uses {before!r}: load it with "
                         "attn_implementation='sdpa'.")
    _register_repeat_kv()
    config._attn_implementation = REPEAT_KV_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = before


def gqa(config) -> bool:
    """Whether ``config`` shares key/value heads between query heads (grouped-query attention)."""
    heads = config.num_attention_heads
    return (getattr(config, "num_key_value_heads", None) or heads) < heads


def attention_kernel(config, techniques=(), *, device=None, dtype: torch.dtype = torch.float16) -> str:
    """The SDPA kernel one training step of ``config`` with ``techniques`` takes on ``device`` (CUDA, by PyTorch's
    own dispatch rule under the current kernel settings: ``t4.sdpa_kernel_for``); without a device, the one it
    takes on a T4: "efficient", or "math" for a GQA model without ``repeat_kv`` (transformers asks for
    ``enable_gqa``, which only flash accepts)."""
    techniques = check_techniques(techniques)
    grouped = gqa(config) and "repeat_kv" not in techniques
    if device is None:
        return "math" if grouped else "efficient"
    from course_lib import t4

    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv = (getattr(config, "num_key_value_heads", None) or heads) if grouped else heads
    return t4.sdpa_kernel_for((1, heads, 64, head_dim), kv, dtype, device, enable_gqa=grouped)


# ------------------------------------------------------------------------------------------ chunked norm
class _ChunkedRMSNorm(torch.autograd.Function):
    """Llama's RMSNorm, ``weight * (x / rms(x)).to(x.dtype)`` with the mean square in fp32, a chunk of rows at a
    time. Forward keeps ``x`` itself (16-bit, and alive anyway: the residual stream) and one fp32 number per row,
    1/rms; backward recomputes each chunk's normalised rows in fp32:
    dx = (g - x̂ · mean(g · x̂)) / rms, with g = (grad · weight) in x's dtype, as autograd computes it."""

    @staticmethod
    def forward(ctx, x, weight, eps, chunk):
        h = x.shape[-1]
        rows = x.reshape(-1, h)
        out = torch.empty(rows.shape, dtype=torch.promote_types(weight.dtype, x.dtype), device=x.device)
        rstd = torch.empty((rows.shape[0], 1), dtype=torch.float32, device=x.device)
        for start in range(0, rows.shape[0], chunk):
            xf = rows[start:start + chunk].float()
            r = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
            rstd[start:start + chunk] = r
            out[start:start + chunk] = weight * (xf * r).to(x.dtype)
            del xf, r
        ctx.save_for_backward(x, weight, rstd)
        ctx.chunk = chunk
        return out.view(*x.shape[:-1], h)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, rstd = ctx.saved_tensors
        h = x.shape[-1]
        rows, grads = x.reshape(-1, h), grad_out.reshape(-1, h)
        grad_x = torch.empty_like(rows) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros(h, dtype=torch.float32, device=x.device) if ctx.needs_input_grad[1] else None
        for start in range(0, rows.shape[0], ctx.chunk):
            r = rstd[start:start + ctx.chunk]
            xhat = rows[start:start + ctx.chunk].float() * r
            go = grads[start:start + ctx.chunk]
            if grad_w is not None:
                grad_w += (go * xhat.to(x.dtype)).float().sum(0)
            if grad_x is not None:
                g = (go * weight).to(x.dtype).float()
                grad_x[start:start + ctx.chunk] = (r * (g - xhat * (g * xhat).mean(-1, keepdim=True))).to(x.dtype)
                del g
            del xhat
        return (grad_x.view_as(x) if grad_x is not None else None,
                grad_w.to(weight.dtype) if grad_w is not None else None, None, None)


def _norms(decoder) -> list:
    norms = [m for layer in decoder.layers for m in (layer.input_layernorm, layer.post_attention_layernorm)]
    norms.append(decoder.norm)
    for m in norms:
        if not type(m).__name__.endswith("RMSNorm") or not hasattr(m, "variance_epsilon"):
            raise ValueError(f"'chunked_norm' replaces Llama-style RMSNorm layers, but found {type(m).__name__}.")
    return norms


@contextlib.contextmanager
def chunked_norm(model, chunk_size: int = DEFAULT_NORM_CHUNK):
    """Inside this context every RMSNorm of the decoder (two per layer and the final one) runs as
    ``_ChunkedRMSNorm``, ``chunk_size`` tokens at a time. Keep it open through ``backward()``."""
    _positive_int(chunk_size, "chunk_size")
    decoder, _ = causal_lm_parts(model)
    norms = _norms(decoder)
    for m in norms:
        m.forward = lambda x, m=m: _ChunkedRMSNorm.apply(x, m.weight, m.variance_epsilon, chunk_size)
    try:
        yield
    finally:
        for m in norms:
            del m.forward


# ------------------------------------------------------------------------------------------- one step
class StepTooLargeError(MemoryError):
    """A step is predicted not to fit the memory there is with the attention kernel it would use (refused before
    it runs, not after minutes of an out-of-memory error)."""


def forward_backward(model, input_ids: torch.Tensor, labels: torch.Tensor | None = None, *, techniques=(),
                     loss: str | None = None, loss_chunk: int = DEFAULT_LOSS_CHUNK,
                     mlp_chunk: int = DEFAULT_MLP_CHUNK, norm_chunk: int = DEFAULT_NORM_CHUNK,
                     autocast_dtype: torch.dtype | None = None, check_ram: bool = True,
                     check_memory: bool = True, loss_scale: float = 1.0) -> float:
    """One training step's forward and backward pass of a (PEFT) causal LM; returns the loss. Gradients are
    accumulated into the trainable parameters, as ``loss.backward()`` does.

    ``techniques``: any of ``TECHNIQUES``. ``loss``: a ``LOSS_IMPLS`` name, by default ``chunked`` with
    "chunked_loss" and ``plain`` without. ``no_lora_dropout`` is a property of the model (LoRA built with
    ``lora_dropout=0``), so here it only checks that. ``autocast_dtype``: run the forward under autocast (what the
    Trainer does with fp16/bf16); None: no autocast. ``loss_scale``: backpropagate ``loss_scale * loss``, as fp16
    training does (``GradScaler``): without it, gradients below fp16's smallest number (6e-8; a logit's gradient
    is about 1/(tokens x vocabulary)) become zero. The gradients are then ``loss_scale`` times too large.
    ``check_memory`` (CUDA): predict the peak with the attention kernel this GPU will use and refuse a step
    predicted to need more than 110% of the memory this process may use (the prediction's accuracy is ±10%)."""
    techniques = check_techniques(techniques)
    decoder, lm_head = causal_lm_parts(model)
    config = decoder.config
    check_length(config, input_ids.shape[-1])
    for value, name in ((loss_chunk, "loss_chunk"), (mlp_chunk, "mlp_chunk"), (norm_chunk, "norm_chunk")):
        _positive_int(value, name)
    if loss is None:
        loss = "chunked" if "chunked_loss" in techniques else "plain"
    if "no_lora_dropout" in techniques and lora_dropout(model) > 0:
        raise ValueError(f"'no_lora_dropout' asks for LoRA adapters without dropout, but this model's have "
                         f"p={lora_dropout(model)}: build them with LoraConfig(lora_dropout=0.0).")
    offload = "offload" in techniques
    device = input_ids.device
    if offload and check_ram and device.type == "cuda":
        residual = decoder.embed_tokens.weight.element_size() if autocast_dtype is None else 2
        check_offload_ram(config, input_ids.shape[-1], input_ids.shape[0], residual)
    if check_memory and device.type == "cuda":
        check_step_fits(model, techniques, input_ids.shape[-1], batch_size=input_ids.shape[0],
                        dtype=autocast_dtype or decoder.embed_tokens.weight.dtype, loss_chunk=loss_chunk,
                        mlp_chunk=mlp_chunk, norm_chunk=norm_chunk)
    labels = input_ids if labels is None else labels
    with contextlib.ExitStack() as stack:  # every context stays open through backward(): checkpointing reruns
        if "repeat_kv" in techniques:
            stack.enter_context(repeat_kv_attention(model))
        if "tiled_mlp" in techniques:
            stack.enter_context(tiled_mlp(model, mlp_chunk))
        if "chunked_norm" in techniques:
            stack.enter_context(chunked_norm(model, norm_chunk))
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            with offload_to_cpu() if offload else contextlib.nullcontext():
                hidden = decoder(input_ids=input_ids, use_cache=False).last_hidden_state
            value = head_loss(hidden, lm_head, labels, loss, chunk_size=loss_chunk)
        del hidden
        (value * loss_scale if loss_scale != 1.0 else value).backward()
    return value.item()


def _lora_settings(model) -> tuple[int, object, str]:
    """(r, targets, preparation) of a PEFT LoRA model, for the prediction: the lean preparation keeps the
    embeddings in the compute dtype, PEFT's default casts them to fp32."""
    cfg = getattr(model, "peft_config", {}).get(getattr(model, "active_adapter", "default"))
    r = getattr(cfg, "r", 8)
    targets = getattr(cfg, "target_modules", None) or ("q_proj", "v_proj")
    targets = "all-linear" if targets == "all-linear" or set(targets) >= set(memory.LINEAR_MODULES) else tuple(
        t for t in memory.LINEAR_MODULES if t in set(targets))
    decoder, _ = causal_lm_parts(model)
    prep = "default" if decoder.embed_tokens.weight.dtype == torch.float32 else "lean"
    return r, targets, prep


def check_step_fits(model, techniques, seq_len: int, *, batch_size: int = 1, dtype: torch.dtype = torch.float16,
                    available: int | None = None, **chunks) -> memory.MemoryEstimate:
    """Refuse (``StepTooLargeError``) a step of ``model`` at ``seq_len`` whose predicted peak, with the attention
    kernel this GPU will take, is more than 110% of ``available`` (default: what this process may use on its
    GPU); return the prediction."""
    decoder, _ = causal_lm_parts(model)
    config = decoder.config
    device = decoder.embed_tokens.weight.device
    kernel = attention_kernel(config, techniques, device=device, dtype=dtype)
    r, targets, prep = _lora_settings(model)
    prep = "lean" if techniques else prep  # the techniques are modelled on the lean preparation only
    if available is None:
        available = _allocator_limit(device)
    return check_fits(config, techniques, seq_len, available, prep=prep, r=r, targets=targets,
                      batch_size=batch_size, attention=kernel if kernel in ATTENTION_KERNELS else "efficient",
                      compute_dtype=dtype if dtype in (torch.float16, torch.bfloat16) else torch.float16, **chunks)


def check_fits(config, techniques, seq_len: int, available: int, *, attention: str | None = None,
               **kwargs) -> memory.MemoryEstimate:
    """``predict_peak(config, techniques, seq_len, attention=..., **kwargs)``, or ``StepTooLargeError`` when that
    is more than 110% of ``available`` bytes (the prediction's accuracy is ±10%), naming the kernel."""
    est = predict_peak(config, techniques, seq_len, attention=attention, **kwargs)
    kernel = est.details["attention"]
    if est.total_bytes > 1.1 * available:
        techniques = check_techniques(techniques)
        hint = (" The math kernel stores every tokens x tokens score: add 'repeat_kv' (on a T4, the memory-efficient "
                "kernel then runs)." if kernel == "math" else "")
        raise StepTooLargeError(
            f"a step of {kwargs.get('batch_size', 1)} x {seq_len:,} tokens with {'+'.join(techniques) or 'no technique'}"
            f" is predicted to need {est.total_bytes / memory.GiB:.1f} GiB with the {kernel} attention kernel, but "
            f"{available / memory.GiB:.1f} GiB is available.{hint} Or use a shorter sequence, or more of "
            "longctx.TECHNIQUES.")
    return est


def _allocator_limit(device: torch.device) -> int:
    """Bytes the caching allocator may hold on ``device``: the per-process fraction's share of the card, or what
    the card has free plus what this process already holds."""
    total = torch.cuda.get_device_properties(device).total_memory
    try:
        fraction = torch.cuda.get_per_process_memory_fraction(device)
    except AttributeError:  # older torch
        fraction = 1.0
    free, _ = torch.cuda.mem_get_info(device)
    return int(min(fraction * total, free + torch.cuda.memory_reserved(device)))


def adapter_gradients(model) -> dict[str, torch.Tensor]:
    """name -> a copy of the gradient of every trainable parameter (the LoRA adapters)."""
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def zero_gradients(model) -> None:
    for p in model.parameters():
        p.grad = None


# ------------------------------------------------------------------------------------------ prediction
ATTENTION_KERNELS = ("flash", "efficient", "math")


def predict_peak(config, techniques=(), seq_len: int = 4096, *, prep: str = "lean", r: int = 32,
                 targets="all-linear", batch_size: int = 1, compute_dtype: torch.dtype = torch.float16,
                 loss_chunk: int = DEFAULT_LOSS_CHUNK, mlp_chunk: int = DEFAULT_MLP_CHUNK,
                 norm_chunk: int = DEFAULT_NORM_CHUNK, attention: str | None = None,
                 optimizer: bool = False) -> memory.MemoryEstimate:
    """Predicted peak memory of one QLoRA forward + backward at ``seq_len`` with ``techniques``.

    Starts from ``course_lib.qlora.predict_peak`` (``course_lib.memory``'s model of the 4-bit weights, adapters,
    checkpointed layer inputs, one recomputed layer and the loss), then replaces what each technique changes:
    ``chunked_loss`` the 12 bytes per logit by one chunk's logits (8 bytes each) and the hidden states with their
    gradient; ``offload`` the layer inputs on the GPU by a few (``OFFLOAD_GPU_COPIES``); ``no_lora_dropout``
    drops the adapters' copies of their inputs; ``tiled_mlp`` keeps the MLP's intermediates for one tile;
    ``chunked_norm`` the norms' fp32 copies and temporaries; ``repeat_kv`` stores K and V at the query's heads.

    ``attention``: the SDPA kernel that runs ("flash", "efficient" or "math"; default: the one a T4 takes,
    ``attention_kernel(config, techniques)``). The math kernel adds ``MATH_SCORE_COPIES`` fp32 score matrices
    (heads x tokens x tokens) to the recomputed layer's backward pass: quadratic in the length.
    ``optimizer=False`` (a forward + backward, or a paged optimizer whose state lives in CUDA unified memory, which
    ``max_memory_allocated`` does not count) leaves AdamW's state out."""
    from course_lib import qlora

    techniques = check_techniques(techniques)
    check_length(config, seq_len)
    for value, name in ((loss_chunk, "loss_chunk"), (mlp_chunk, "mlp_chunk"), (norm_chunk, "norm_chunk")):
        _positive_int(value, name)
    if attention is None:
        attention = attention_kernel(config, techniques)
    if attention not in ATTENTION_KERNELS:
        raise ValueError(f"unknown attention kernel {attention!r}; choose one of {ATTENTION_KERNELS}.")
    if techniques and prep != "lean":
        raise ValueError("the techniques are modelled on top of the lean preparation: use prep='lean'.")
    base = qlora.predict_peak(config, prep, r=r, targets=targets, batch_size=batch_size, seq_len=seq_len,
                              compute_dtype=compute_dtype)
    if not optimizer:
        base = replace(base, optimizer_state=0)
    s = memory._shape(config)
    n = batch_size * seq_len
    alloc = memory._alloc
    a = memory._dtype_bytes(compute_dtype)
    if not techniques:  # the memory model's own estimate, and the math kernel's moment where that kernel runs
        if attention == "math":
            stored = base.details["stored_activations"]
            moment = stored + _math_attention_moment(s, n, a, batch_size, seq_len, repeated=gqa(config))
            if moment > base.activations + base.logits:
                base = replace(base, activations=moment, logits=0, peak_phase="backward of the last decoder layer",
                               details=dict(base.details, layer_backward=moment - stored,
                                            layer_moment="attention backward (math kernel)"))
        return replace(base, details=dict(base.details, attention=attention))
    h, inter, hq, hkv, V, L = s["h"], s["inter"], s["hq"], s["hkv"], s["V"], s["L"]
    tgts = memory._targets(targets)
    inputs = {"q_proj": h, "k_proj": h, "v_proj": h, "o_proj": hq, "gate_proj": h, "up_proj": h, "down_proj": inter}
    # LoRA dropout: each adapter keeps its dropped input (compute dtype) and the mask (1 byte) per input element
    copies = {t: 0 if "no_lora_dropout" in techniques else (a + 1) * inputs[t] for t in tgts}
    mlp_copies = sum(v for t, v in copies.items() if t in ("gate_proj", "up_proj", "down_proj"))

    # what gradient checkpointing keeps between the forward and the backward pass
    layer_inputs = OFFLOAD_GPU_COPIES if "offload" in techniques else L
    stored = layer_inputs * alloc(n * h * a) + 2 * alloc(n * s["head_dim"] * a)
    # One recomputed layer, at the largest of its moments (seen in benchmarks/long_context_breakdown.py's
    # allocator traces), each with the layer's output gradient (2ah per token):
    # * recomputed: every tensor the layer saves: both norms' inputs, q/k/v/attention output, the MLP's gate, up,
    #   silu(gate) and their product, the LoRA dropout copies. With dropout this is the peak.
    # * MLP backward: three intermediate-sized gradients on top of the saved tensors (which backward then frees
    #   as fast as it allocates: the dropout copies are not counted again). Without dropout this is the peak.
    # * norm backward: an RMSNorm's backward in fp32 holds five hidden-sized fp32 temporaries. With a tiled MLP
    #   (whose wide tensors then exist for one tile only) this is the peak; chunked_norm makes them a chunk's.
    # * attention backward: the kernel's gradients of q, k and v (at the query's heads when K/V are repeated) on
    #   top of what attention saved, once the MLP and the second norm are done (their tensors freed).
    chunked = "chunked_norm" in techniques
    norms = a * h + 8 if chunked else 8 * h  # the 2nd norm's 16-bit input (the 1st's is the layer input), or fp32 x2
    norm1 = 0 if chunked else 4 * h
    kv = hq if "repeat_kv" in techniques else hkv  # K and V as attention keeps them
    attention_saved = a * (2 * hq + 2 * kv) + 4 * s["heads"]
    mlp_saved, mlp_grads = 4 * a * inter + mlp_copies, 3 * a * inter
    grad_out = 2 * a * h
    dequantized = alloc(2 * max(i * o for i, o in memory.linear_shapes(config).values()))
    rows = min(mlp_chunk, n) if "tiled_mlp" in techniques else n  # tokens whose MLP tensors exist at once
    norm_rows = min(norm_chunk, n) if chunked else n
    around = norms + attention_saved + sum(copies.values()) - mlp_copies + grad_out  # the layer outside its MLP
    moments = {"recomputed": alloc(n * around) + alloc(rows * mlp_saved),
               "MLP backward": alloc(n * (norms + attention_saved + grad_out))
               + alloc(rows * (3 * a * inter + mlp_grads)),
               "norm backward": alloc(n * (norms + attention_saved + grad_out)) + alloc(norm_rows * 5 * 4 * h),
               "attention backward": alloc(n * (norm1 + attention_saved + grad_out + a * (hq + 2 * kv)))}
    if attention == "math":
        moments["attention backward (math kernel)"] = _math_attention_moment(
            s, n, a, batch_size, seq_len, repeated=gqa(config) and "repeat_kv" not in techniques, norm1=norm1)
    layer_moment = max(moments, key=moments.get)
    layer = moments[layer_moment] + dequantized
    phases = {"backward of the last decoder layer": (stored + layer, 0)}
    # the final norm's input: fp32 in the plain norm, the 16-bit residual with chunked_norm; offloaded with offload
    final_norm = 0 if "offload" in techniques else alloc((a if chunked else 4) * n * h)
    if "chunked_loss" in techniques:
        chunk = min(loss_chunk, n)
        phases["loss (logits backward)"] = (stored + final_norm + 2 * alloc(n * h * a), alloc(8 * chunk * V))
    else:
        phases["loss (logits backward)"] = (stored + final_norm, base.logits if base.logits else 12 * n * V)
    phase = max(phases, key=lambda k: sum(phases[k]))
    activations, logits = phases[phase]
    return replace(base, activations=activations, logits=logits, peak_phase=phase,
                   details=dict(base.details, techniques=techniques, stored_activations=stored, attention=attention,
                                phases={k: sum(v) + base.total_bytes - base.activations - base.logits
                                        for k, v in phases.items()}, loss_logits=phases["loss (logits backward)"][1],
                                layer_backward=layer, layer_moment=layer_moment,
                                offloaded_cpu_bytes=offload_bytes(config, seq_len, batch_size, a)
                                if "offload" in techniques else 0))


def _math_attention_moment(s: dict, n: int, a: int, batch_size: int, seq_len: int, *, repeated: bool,
                           norm1: int | None = None) -> int:
    """Bytes of one recomputed layer at its math-kernel attention backward: the MLP and the second norm are done
    (their tensors freed); the first norm's fp32 input, q, K/V (repeated to the query's heads when the model
    groups them: the math kernel repeats them itself), the output and their gradients, the layer's output
    gradient, and ``MATH_SCORE_COPIES`` fp32 score matrices per head."""
    h, hq, hkv = s["h"], s["hq"], s["hkv"]
    kv = hq if repeated else hkv
    norm1 = 4 * h if norm1 is None else norm1
    per_token = norm1 + a * (2 * hq + 2 * kv) + 4 * s["heads"] + 2 * a * h + a * (hq + 2 * kv)
    scores = MATH_SCORE_COPIES * memory._alloc(4 * batch_size * s["heads"] * seq_len**2)
    dequantized = memory._alloc(2 * max(i * o for i, o in _linear_shapes(s).values()))
    return memory._alloc(n * per_token) + scores + dequantized


def _linear_shapes(s: dict) -> dict:
    return memory._linears(s)


def predicted_longest(config, techniques=(), *, available: int, step: int = 256, limit: int | None = None,
                      **kwargs) -> int:
    """The longest multiple of ``step`` tokens whose predicted peak fits in ``available`` bytes (0 if none)."""
    limit = limit or getattr(config, "max_position_embeddings", 1 << 20)

    def fits(n):
        return predict_peak(config, techniques, n, **kwargs).total_bytes <= available

    lo, hi = 0, limit // step
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid * step) else (lo, mid - 1)
    return lo * step


# ------------------------------------------------------------------------------------------ the search
def longest_fitting(fits, guess: int, *, step: int = 256, low: int = 0, high: int | None = None,
                    max_probes: int = 6, limit: int | None = None) -> tuple[int, int | None, list[tuple[int, bool]]]:
    """Search the longest length (a multiple of ``step``) for which ``fits(length)`` is True, starting from a
    ``guess`` (e.g. the predicted longest), with at most ``max_probes`` calls: try the guess, then move up or down
    by growing steps until the answer is bracketed, then bisect. Returns ``(longest that fitted, shortest that did
    not or None, probes)``; the answer is exact to ``step`` when ``high - low == step``. ``low``: a length known to
    fit (0: none); ``high``: one known not to (None: unknown); ``limit``: the longest length worth trying (if it
    fits, the search stops there: the answer is "at least ``limit``")."""
    _positive_int(step, "step")
    if limit is not None:
        limit = limit // step * step
        guess = min(guess, limit)

    def snap(n):
        return max(step, int(round(n / step)) * step)

    probes: list[tuple[int, bool]] = []
    n = snap(guess)
    jump = max(step, snap(guess / 8))
    while len(probes) < max_probes:
        if n <= low or (high is not None and n >= high):
            if high is not None and high - low <= step:
                break
            n = snap((low + high) / 2) if high is not None else low + jump
            if n <= low or (high is not None and n >= high):
                break
        ok = bool(fits(n))
        probes.append((n, ok))
        if ok:
            low = n
        else:
            high = n
        if high is not None and high - low <= step:
            break
        if high is None:  # nothing failed yet: go up, by more each time
            if limit is not None and low >= limit:
                break
            n, jump = low + jump, jump * 2
            n = min(n, limit) if limit is not None else n
        elif low == 0 and not any(p[1] for p in probes):  # nothing fitted yet: go down, by more each time
            n = snap(high - jump) if high - jump >= step else step
            jump *= 2
        else:
            n = snap((low + high) / 2)
            n = min(max(n, low + step), high - step)
    return low, high, probes


# ------------------------------------------------------------------------------------- for notebook 10
# (name, preparation, techniques): PEFT's default, the course's lean preparation, then one technique more a step
STEPS = (("peft-default", "default", ()), ("lean", "lean", ())) + tuple(
    ("+ " + t.replace("_", " "), "lean", TECHNIQUES[:i + 1]) for i, t in enumerate(TECHNIQUES))


def waterfall(config, seq_len: int, **kwargs) -> list[dict]:
    """The predicted peak of each step of ``STEPS`` at ``seq_len``, split into ``MemoryEstimate.PARTS``."""
    rows = []
    for name, prep, techniques in STEPS:
        est = predict_peak(config, techniques, seq_len, prep=prep, **kwargs)
        rows.append(dict(step=name, total=est.total_bytes, phase=est.peak_phase, attention=est.details["attention"],
                         **est.breakdown()))
    return rows


def equivalence_table(arch: str = "llama", seq_len: int = 48, seed: int = 0) -> list[dict]:
    """Each technique (and all of them) against the plain path on a tiny model with LoRA on every linear layer,
    in fp32: the loss difference and the largest relative difference of any adapter gradient."""
    import warnings

    from peft import LoraConfig, get_peft_model

    from course_lib import models

    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")  # *_checkpointing renames
    model = models.tiny_model(arch, seed=seed)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0,
                                             init_lora_weights=False))
    model.train()
    ids = torch.randint(0, model.config.vocab_size, (1, seq_len), generator=torch.Generator().manual_seed(seed))

    def step(techniques, **kw):
        zero_gradients(model)
        value = forward_backward(model, ids, techniques=techniques, **kw)
        return value, adapter_gradients(model)

    ref_loss, ref = step(())
    cases = [(t,) for t in TECHNIQUES] + [TECHNIQUES]
    rows = []
    for techniques in cases:
        loss, grads = step(techniques, loss_chunk=7, mlp_chunk=11)  # chunks that do not divide the sequence
        rel = max(((grads[k] - ref[k]).norm() / ref[k].norm().clamp_min(1e-30)).item() for k in ref)
        rows.append({"techniques": " + ".join(techniques), "loss": loss, "plain loss": ref_loss,
                     "|loss difference|": abs(loss - ref_loss), "max relative gradient difference": rel})
    zero_gradients(model)
    return rows
