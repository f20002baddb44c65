"""Memory budgets of fine-tuning (notebook 05): predict peak GPU memory for full fine-tuning, LoRA and QLoRA.

``estimate_training_memory`` predicts ``torch.cuda.max_memory_allocated()`` during training steps (after loading)
of a Hugging Face Llama-family model trained the common way:

* sdpa attention, AdamW (PyTorch's default foreach implementation), gradient checkpointing on every decoder layer,
  no padding mask, and ``loss = model(input_ids, labels=labels).loss`` (the output, with its logits, is dropped
  before ``backward`` as the Trainer does);
* "full": every parameter trained with AdamW, by one of two recipes (``full_recipe``):
  ``"mixed"`` (the default, what the Trainer does with ``fp16=True`` or ``bf16=True``): fp32 parameters, which are
  the master weights, fp32 gradients and fp32 AdamW states, with matmuls autocast to ``compute_dtype``: 4 + 4 + 8 =
  16 bytes per parameter. A T4 has no bf16, and fp16 parameters cannot be trained with loss scaling
  (``torch.amp.GradScaler`` refuses fp16 gradients), so on a T4 this is the only recipe. ``"pure"``: everything in
  ``compute_dtype`` (parameters, gradients, AdamW states): 2 + 2 + 4 = 8 bytes per parameter, for bf16 only;
* "lora": the base model in ``compute_dtype``, PEFT adapters in fp32 (PEFT's default ``autocast_adapter_dtype``);
* "qlora": linear layers in 4-bit NF4 (double quantization by default), then PEFT's
  ``prepare_model_for_kbit_training``, which upcasts every parameter that is not 4-bit (embeddings, lm_head,
  norms) to fp32. The embedding output is then fp32, so the whole residual stream and the logits are fp32 too.

The peak is the static part (weights, quantization state, adapters, their gradients, AdamW state) plus the largest
of three moments: the loss (three fp32 tensors the size of the logits alive at once in its backward pass: the
log-softmax output saved by the forward pass, the gradient the loss hands back, and the log-softmax's own gradient:
12 bytes per logit), the backward pass of one
recomputed decoder layer, and (full fine-tuning) the optimizer step. The per-part fields of ``MemoryEstimate`` say
what is alive at that peak. Every allocation is rounded up to 512 bytes as the CUDA caching allocator does.


Measuring what this predicts is ``course_lib.measurement``'s job; the GPU measurements that check it are
``resources.measurements("memory_accuracy.csv")`` (written by ``benchmarks/memory_accuracy.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

METHODS = ("full", "lora", "qlora")
FULL_RECIPES = ("mixed", "pure")  # full fine-tuning: fp32 master weights + 16-bit compute, or everything 16-bit
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GB = 1e9
GiB = 2**30


def _alloc(nbytes: float) -> int:
    """Bytes the CUDA caching allocator counts for one tensor of ``nbytes``: rounded up to 512."""
    return int(math.ceil(nbytes / 512) * 512)


def _dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


@dataclass
class MemoryEstimate:
    """Predicted peak memory of a training step, in bytes, split by what is alive at the peak."""

    method: str
    weights: int
    quant_state: int
    adapters: int
    gradients: int
    optimizer_state: int
    activations: int
    logits: int
    peak_phase: str
    trainable_params: int
    details: dict = field(default_factory=dict)

    PARTS = ("weights", "quant_state", "adapters", "gradients", "optimizer_state", "activations", "logits")

    @property
    def total_bytes(self) -> int:
        return sum(self.breakdown().values())

    @property
    def total_gb(self) -> float:
        return self.total_bytes / GB

    def breakdown(self) -> dict[str, int]:
        return {part: getattr(self, part) for part in self.PARTS}

    def __str__(self) -> str:
        lines = [f"{self.method}: {self.total_gb:.2f} GB at the {self.peak_phase}"]
        lines += [f"  {part:<16}{value / GB:8.3f} GB" for part, value in self.breakdown().items()]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- the config
def _shape(config) -> dict:
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"estimate_training_memory models Llama-family decoders {SUPPORTED_MODEL_TYPES}; got "
                         f"model_type={model_type!r}. Use a LlamaConfig of the same shape "
                         "(course_lib.models.synthetic_config) or extend course_lib.memory.")
    h, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    return dict(h=h, inter=config.intermediate_size, L=config.num_hidden_layers, V=config.vocab_size,
                hq=heads * head_dim, hkv=kv * head_dim, heads=heads, head_dim=head_dim,
                tied=bool(getattr(config, "tie_word_embeddings", False)),
                qkv_bias=bool(getattr(config, "attention_bias", model_type == "qwen2")))


def linear_shapes(config) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each linear layer of one decoder layer."""
    return _linears(_shape(config))


def _linears(s: dict) -> dict[str, tuple[int, int]]:
    h, hq, hkv, inter = s["h"], s["hq"], s["hkv"], s["inter"]
    return {"q_proj": (h, hq), "k_proj": (h, hkv), "v_proj": (h, hkv), "o_proj": (hq, h),
            "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}


def _targets(target_modules) -> tuple[str, ...]:
    if target_modules == "all-linear":
        return LINEAR_MODULES
    if isinstance(target_modules, str):
        target_modules = (target_modules,)
    unknown = sorted(set(target_modules) - set(LINEAR_MODULES))
    if unknown:
        raise ValueError(f"unknown target module(s) {unknown}: a Llama decoder layer has {list(LINEAR_MODULES)} "
                         "(or pass 'all-linear').")
    return tuple(t for t in LINEAR_MODULES if t in target_modules)


def parameter_count(config) -> int:
    """Parameters of the model (tied embeddings counted once)."""
    s = _shape(config)
    per_layer = sum(i * o for i, o in linear_shapes(config).values()) + 2 * s["h"]
    if s["qkv_bias"]:
        per_layer += s["hq"] + 2 * s["hkv"]
    return s["L"] * per_layer + s["V"] * s["h"] * (1 if s["tied"] else 2) + s["h"]


def nf4_bytes(numel: int, blocksize: int = 64, double_quant: bool = True) -> tuple[int, int]:
    """(packed 4-bit data, quantization state) bytes of one bitsandbytes ``Params4bit`` as allocated on a GPU."""
    blocks = math.ceil(numel / blocksize)
    data = _alloc((numel + 1) // 2)
    if double_quant:  # uint8 absmax + fp32 absmax of absmax (blocks of 256) + its 256-entry code + offset
        state = _alloc(blocks) + _alloc(4 * math.ceil(blocks / 256)) + _alloc(256 * 4) + _alloc(4)
    else:
        state = _alloc(4 * blocks)
    return data, state + _alloc(16 * 4)  # + the 16-value NF4 code table


# --------------------------------------------------------------------------------------------- the estimate
def estimate_training_memory(config, method: str, *, r: int = 8, target_modules=("q_proj", "v_proj"),
                             batch_size: int = 1, seq_len: int = 512, compute_dtype: torch.dtype = torch.bfloat16,
                             gradient_checkpointing: bool = True, double_quant: bool = True,
                             blocksize: int = 64, upcast_non_quantized: bool = True,
                             autocast: bool = False, full_recipe: str = "mixed") -> MemoryEstimate:
    """Predict the peak memory of training ``config`` with ``method`` ("full", "lora" or "qlora"); see the module
    docstring for the recipe this models. ``target_modules``: LoRA targets (names or "all-linear").

    ``upcast_non_quantized`` (qlora only): True is PEFT's ``prepare_model_for_kbit_training`` (the "default"
    preparation: embeddings, head, norms and so the residual stream in fp32); False keeps them in
    ``compute_dtype`` (the course's "lean" preparation, and the FSDP-QLoRA recipe, which wants one dtype per unit).
    ``autocast``: training under ``torch.autocast`` in 16-bit, as the Trainer does with fp16/bf16=True. Then an
    fp32 output head is cast to 16-bit for its matmul and that copy is kept for the backward pass: one more
    V x h matrix at the loss (it matters only for qlora with ``upcast_non_quantized``).
    ``full_recipe`` (full only): ``"mixed"`` (fp32 master weights, 16 bytes per parameter) or ``"pure"`` (all in
    ``compute_dtype``, 8 bytes per parameter in bf16); see the module docstring."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if compute_dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"compute_dtype must be torch.float32, float16 or bfloat16, got {compute_dtype}")
    _check_full_recipe(full_recipe, compute_dtype, method)
    if batch_size < 1 or seq_len < 1 or r < 1:
        raise ValueError("batch_size, seq_len and r must be positive integers")
    s = _shape(config)
    h, L, V = s["h"], s["L"], s["V"]
    n = batch_size * seq_len
    cb = _dtype_bytes(compute_dtype)
    linears = linear_shapes(config)
    targets = _targets(target_modules) if method != "full" else ()
    # bytes of one stored parameter: full mixed precision keeps fp32 parameters (the master weights)
    pb = 4 if method == "full" and full_recipe == "mixed" else cb

    # ---- static: weights, quantization state, adapters, gradients, optimizer state
    embeddings = [V * h] if s["tied"] else [V * h, V * h]
    small = [h] * (2 * L + 1) + ([s["hq"], s["hkv"], s["hkv"]] * L if s["qkv_bias"] else [])
    quant_state = 0
    if method == "qlora":
        packed = [nf4_bytes(i * o, blocksize, double_quant) for i, o in linears.values()]
        nb = 4 if upcast_non_quantized else cb  # bytes of each parameter that is not 4-bit
        weights = L * sum(p for p, _ in packed) + sum(_alloc(nb * x) for x in embeddings + small)
        quant_state = L * sum(q for _, q in packed)
    else:
        weights = L * sum(_alloc(pb * i * o) for i, o in linears.values()) + sum(_alloc(pb * x) for x in embeddings + small)

    adapter_sizes = [r * i for t in targets for i in [linears[t][0]]] + [linears[t][1] * r for t in targets]
    adapters = L * sum(_alloc(4 * x) for x in adapter_sizes)
    if method == "full":
        trainable = parameter_count(config)
        gradients, optimizer_state = weights, 2 * weights
    else:
        trainable = L * sum(adapter_sizes)
        gradients, optimizer_state = adapters, 2 * adapters

    # ---- activations: a = bytes of the residual stream, c = bytes of what the layers compute inside
    # (fp32 embeddings make the stream fp32: QLoRA's default preparation, and full fine-tuning's fp32 parameters)
    a = 4 if (method == "qlora" and upcast_non_quantized) or pb == 4 else cb
    c = cb if method == "full" else a
    if gradient_checkpointing:
        stored = L * _alloc(n * h * a) + 2 * _alloc(n * s["head_dim"] * a)  # layer inputs + RoPE cos/sin
        layer = _layer_backward_bytes(s, n, a, targets, method, c=c)
    else:  # every layer's saved tensors; in an fp32 stream the first norm keeps the layer's input itself
        stored = (L * _layer_backward_bytes(s, n, a, targets, method, saved_only=True, c=c)
                  + (L * _alloc(n * h * a) if a == 4 else 0) + 2 * _alloc(n * s["head_dim"] * a))
        layer = 0
    # The loss: fp32 log-softmax output + the gradient nll_loss hands back + the log-softmax gradient, all (n, V),
    # while the final norm keeps its fp32 input. (A 16-bit model's forward pass holds its logits, an fp32 copy and
    # the log-softmax: 10 bytes per logit, below these 12.)
    # Each moment: (activations, logits, gradients, optimizer temporaries) alive then.
    grads_in_backward = 0 if method == "full" else gradients  # full: set to None by zero_grad() after each step
    # under autocast an fp32 output head is cast to 16-bit for its matmul, and that copy is saved for backward
    head_copy = _alloc(cb * V * h) if cb == 2 and ((autocast and method == "qlora" and upcast_non_quantized)
                                                   or (method == "full" and pb == 4)) else 0
    phases = {"loss (logits backward)": (stored + _alloc(4 * n * h), 3 * _alloc(4 * n * V) + head_copy,
                                         grads_in_backward, 0),
              "backward of the last decoder layer": (stored + layer, 0, grads_in_backward, 0)}
    if method == "full":
        # The gradients appear during the backward pass, output end first: the head's (and final norm's) exist
        # while the last decoder layer runs backward; all but the first layer's and the input embedding's while
        # the first one does (its checkpoint the only one left).
        head = _alloc(pb * V * h) + _alloc(pb * h)
        first_layer = sum(_alloc(pb * i * o) for i, o in linears.values()) + 2 * _alloc(pb * h)
        not_yet = first_layer + (0 if s["tied"] else _alloc(pb * V * h))
        phases["backward of the last decoder layer"] = (stored + layer, 0, head, 0)
        if gradient_checkpointing:
            phases["backward of the first decoder layer"] = (_alloc(n * h * a) + 2 * _alloc(n * s["head_dim"] * a)
                                                             + layer, 0, gradients - not_yet, 0)
        # foreach AdamW allocates one temporary as large as all parameters (sqrt of exp_avg_sq)
        phases["optimizer step"] = (0, 0, gradients, weights)
    peak_phase = max(phases, key=lambda k: sum(phases[k]))
    activations, logits, gradients, optimizer_temporary = phases[peak_phase]
    optimizer_state += optimizer_temporary
    return MemoryEstimate(method=method, weights=weights, quant_state=quant_state, adapters=adapters,
                          gradients=gradients, optimizer_state=optimizer_state, activations=activations,
                          logits=logits, peak_phase=peak_phase, trainable_params=trainable,
                          details=dict(tokens=n, stored_activations=stored, layer_backward=layer,
                                       residual_bytes=a))


def _layer_backward_bytes(s: dict, n: int, a: int, targets, method: str, saved_only: bool = False,
                          c: int | None = None) -> int:
    """Bytes alive while one recomputed decoder layer runs backward (its saved tensors + gradient temporaries).

    Saved per token: each RMSNorm keeps an fp32 copy of its input (4h); q, k, v after RoPE and the attention output
    (sdpa keeps q, k, v, out); the MLP keeps gate, silu(gate) and up (3 x intermediate); each LoRA layer keeps its
    input cast to fp32 (its own copy when the stream is 16-bit; the shared tensor when it is already fp32).
    Full fine-tuning also keeps what the weights' gradients need: every linear layer's input and each norm's
    normalised input. ``a``: bytes of the residual stream; ``c``: bytes of the tensors computed inside the layer
    (``a`` unless full fine-tuning autocasts fp32 parameters to 16-bit; then each linear layer saves its own
    16-bit cast of its input)."""
    c = a if c is None else c
    h, inter, hq, hkv = s["h"], s["inter"], s["hq"], s["hkv"]
    inputs = {"q_proj": h, "k_proj": h, "v_proj": h, "o_proj": hq, "gate_proj": h, "up_proj": h, "down_proj": inter}
    per_token = 4 * h + (4 * h if a != 4 else 0)  # two norms' fp32 inputs (in fp32, the first is the checkpoint)
    per_token += c * (2 * hq + 2 * hkv) + 4 * s["heads"]  # q, k, v, attention output, log-sum-exp
    per_token += 3 * c * inter
    if method == "full":  # the weights' gradients need each norm's normalised input and each linear's input
        per_token += 2 * a * h + c * hq  # the norms' normalised inputs; o_proj's input
        per_token += 2 * a * h if c == a else c * 5 * h  # q/k/v and gate/up inputs: the norm outputs, or 5 casts
        # down_proj's input: saved, but freed by the time the MLP's gradients peak (its backward runs first)
        per_token += c * inter if saved_only else 0
    elif a == 4:  # fp32 stream: LoRA saves the tensors that already exist, once per distinct input
        groups = [("q_proj", "k_proj", "v_proj"), ("o_proj",), ("gate_proj", "up_proj"), ("down_proj",)]
        per_token += sum(4 * inputs[g[0]] for g in groups if any(t in targets for t in g))
    else:
        per_token += sum(4 * inputs[t] for t in targets)
    saved = _alloc(n * per_token)
    if saved_only:
        return saved
    # Gradient temporaries at the MLP (the widest point): three intermediate-sized gradients + two hidden-sized.
    temporaries = _alloc(n * (3 * c * inter + 2 * a * h))
    if method == "qlora":  # bitsandbytes dequantizes the weight being multiplied to 16-bit
        temporaries += _alloc(2 * max(i * o for i, o in _linears(s).values()))
    return saved + temporaries


# --------------------------------------------------------------------------------------------- several GPUs
STRATEGIES = ("ddp", "fsdp")


@dataclass
class PerGPUEstimate(MemoryEstimate):
    """``MemoryEstimate`` of one GPU out of ``num_gpus``, with one more part: ``comm_buffers``, the memory that
    exists only because there are several GPUs (FSDP's all-gathered parameters, DDP's gradient buckets)."""

    comm_buffers: int = 0
    num_gpus: int = 1
    strategy: str = "ddp"

    PARTS = MemoryEstimate.PARTS + ("comm_buffers",)


def estimate_per_gpu_memory(config, method: str, num_gpus: int = 1, strategy: str = "fsdp", *,
                            gathered_layers: int = 2, **kwargs) -> PerGPUEstimate:
    """Peak memory of *one* GPU when ``num_gpus`` GPUs train ``config`` together; ``batch_size`` is per GPU.

    * ``"ddp"``: every GPU holds everything the single-GPU estimate holds, plus DDP's gradient buckets (a second
      copy of the trainable gradients, which it all-reduces). More GPUs: more examples per step, not more room.
    * ``"fsdp"`` (FULL_SHARD, one unit per decoder layer, as accelerate's TRANSFORMER_BASED_WRAP does): weights,
      adapters, gradients and optimizer state are split N ways. Not split: bitsandbytes' quantization state (kept
      on every GPU's modules, it is not a parameter) and the activations. Added (``comm_buffers``): the root
      unit's full parameters (embeddings, final norm, lm_head: gathered from the forward to the backward pass) and
      the full parameters of ``gathered_layers`` decoder layers (the one computing, the one prefetched), plus
      their full gradients when every weight trains. QLoRA uses the FSDP-QLoRA recipe
      (``upcast_non_quantized=False``, ``bnb_4bit_quant_storage`` = compute dtype) unless told otherwise.

    ``num_gpus=1`` returns the single-GPU estimate unchanged: one process has nothing to shard or communicate.
    Other keyword arguments go to ``estimate_training_memory``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
    if not isinstance(num_gpus, int) or num_gpus < 1:
        raise ValueError(f"num_gpus must be a positive integer, got {num_gpus!r}")
    if strategy == "fsdp" and method == "qlora":
        kwargs.setdefault("upcast_non_quantized", False)
    base = estimate_training_memory(config, method, **kwargs)
    fields = {part: getattr(base, part) for part in MemoryEstimate.PARTS}
    est = PerGPUEstimate(method=method, peak_phase=base.peak_phase, trainable_params=base.trainable_params,
                         details=dict(base.details), num_gpus=num_gpus, strategy=strategy, **fields)
    if num_gpus == 1:
        return est
    if strategy == "ddp":
        est.comm_buffers = base.adapters if method != "full" else base.weights  # one bucket byte per gradient byte
        return est
    n = num_gpus
    for part in ("weights", "adapters", "gradients", "optimizer_state"):
        setattr(est, part, math.ceil(getattr(base, part) / n))
    s = _shape(config)
    cb = _dtype_bytes(kwargs.get("compute_dtype", torch.bfloat16))
    upcast = kwargs.get("upcast_non_quantized", True)
    mixed_full = method == "full" and kwargs.get("full_recipe", "mixed") == "mixed"  # fp32 parameters
    nb = 4 if (method == "qlora" and upcast) or mixed_full else cb  # bytes of a parameter that is not 4-bit
    linears = _linears(s)
    if method == "qlora":
        layer = sum(nf4_bytes(i * o, kwargs.get("blocksize", 64), kwargs.get("double_quant", True))[0]
                    for i, o in linears.values())
    else:
        layer = sum((4 if mixed_full else cb) * i * o for i, o in linears.values())
    layer += nb * 2 * s["h"] + (nb * (s["hq"] + 2 * s["hkv"]) if s["qkv_bias"] else 0)
    targets = _targets(kwargs.get("target_modules", ("q_proj", "v_proj"))) if method != "full" else ()
    layer_adapters = 4 * kwargs.get("r", 8) * sum(sum(linears[t]) for t in targets)
    root = nb * s["V"] * s["h"] * (1 if s["tied"] else 2) + nb * s["h"]
    gathered = root + gathered_layers * (layer + layer_adapters)
    if method == "full":
        gathered += gathered_layers * layer  # each layer's full gradient, before it is reduce-scattered
    est.comm_buffers = gathered
    est.details.update(root_unit=root, decoder_layer=layer, gathered_layers=gathered_layers)
    return est


def _check_full_recipe(full_recipe: str, compute_dtype: torch.dtype, method: str = "full") -> None:
    if full_recipe not in FULL_RECIPES:
        raise ValueError(f"unknown full_recipe {full_recipe!r}; choose one of {FULL_RECIPES}")
    if method == "full" and full_recipe == "pure" and compute_dtype == torch.float16:
        raise ValueError("pure fp16 full fine-tuning is not a working recipe: fp16 gradients underflow without loss "
                         "scaling, and torch.amp.GradScaler refuses fp16 parameters. Use full_recipe='mixed' (fp32 "
                         "master weights, what a T4 must use) or compute_dtype=torch.bfloat16 on a GPU with native "
                         "bf16.")


def bytes_per_param(method: str, compute_dtype: torch.dtype = torch.bfloat16, blocksize: int = 64,
                    double_quant: bool = True, full_recipe: str = "mixed") -> dict[str, float]:
    """The textbook ledger: bytes per *base-model* parameter for weights, gradients and AdamW state.
    Full fine-tuning: ``"mixed"`` keeps fp32 parameters (the master weights), fp32 gradients and fp32 moments
    (16 bytes; the 16-bit copies autocast makes for the matmuls are transient); ``"pure"`` keeps all three in
    ``compute_dtype`` (8 bytes in bf16)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    _check_full_recipe(full_recipe, compute_dtype, method)
    from course_lib.nf4 import bits_per_param

    cb = _dtype_bytes(compute_dtype)
    if method == "full":
        pb = 4 if full_recipe == "mixed" else cb
        return {"weights": pb, "gradients": pb, "optimizer": 2 * pb}
    if method == "lora":
        return {"weights": cb, "gradients": 0, "optimizer": 0}
    return {"weights": bits_per_param(blocksize, double_quant) / 8, "gradients": 0, "optimizer": 0}


# --------------------------------------------------------------------------------------------- which GPU fits
# One table of GPUs, in GiB as the CUDA driver reports each card's total (torch.cuda.get_device_properties(0)
# .total_memory). A Colab T4 reports 15,095 MiB: its 16 GB less what ECC keeps (as printed by Colab runs, e.g.
# Ultralytics' device line "CUDA:0 (Tesla T4, 15095MiB)"). And one rule for "fits": the predicted peak of allocated
# tensors must stay under the card less CUDA_OVERHEAD_MIB, what a training process holds outside PyTorch's allocator
# (the CUDA context, kernel images, cuBLAS/cuDNN/bitsandbytes handles): the largest of the figures measured on the
# course's H200 during QLoRA runs (751-943 MiB, rows of kind "overhead" in resources/measurements/long_context.csv),
# rounded up. A T4's own context is probably smaller, so a run that fits this rule fits a real T4. The T4 emulation
# (course_lib.t4) caps a bigger GPU's allocator at usable_bytes("T4").
GPU_GIB = {"T4": 15095 / 1024, "L4": 22.5, "RTX 3090 / 4090": 24.0, "A100 40GB": 40.0, "A100 / H100 80GB": 80.0}
CUDA_OVERHEAD_MIB = 950


def usable_bytes(gpu: str = "T4") -> int:
    """Bytes a training run may allocate on ``gpu`` (a key of ``GPU_GIB``): the card less ``CUDA_OVERHEAD_MIB``."""
    if gpu not in GPU_GIB:
        raise ValueError(f"unknown GPU {gpu!r}; choose one of {list(GPU_GIB)} (or add it to memory.GPU_GIB)")
    return int(GPU_GIB[gpu] * GiB - CUDA_OVERHEAD_MIB * 2**20)


def fits(estimate: MemoryEstimate, gpu: str = "T4") -> bool:
    """Whether ``estimate``'s peak fits ``gpu`` by the one rule above (``usable_bytes``)."""
    return estimate.total_bytes <= usable_bytes(gpu)
