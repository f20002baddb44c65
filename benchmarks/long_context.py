"""How long a sequence one QLoRA step fits on a T4 (the course's T4 emulation, ``course_lib.t4``): PEFT's default
preparation, the course's lean one, and each technique of ``course_lib.longctx`` added in turn; tokens/s at each
step; the attention kernel each step ran; the peak predicted by ``longctx.predict_peak`` beside the measured one at
every length tried.

    python benchmarks/long_context.py --out course_lib/resources/measurements --budget-s 540   # CUDA GPU, ~9 min
    python benchmarks/long_context.py --debug --out /tmp/lc                                    # CPU: the code path

The T4 emulation (``t4.emulate``): the allocator capped at ``memory.usable_bytes("T4")`` (a Colab T4's 15,095 MiB
less what the CUDA context and libraries take outside the allocator), fp16, TF32 off, and SDPA limited to the two
kernels a T4 has (memory-efficient and math). ``--kernels all`` lifts the kernel limit (flash attention allowed:
an H100/H200 result, labelled so in the ``kernels`` column). Model: random weights of the Llama-3.1-8B shape
(Llama-3-8B's, with 131,072 positions), written once as an fp16 checkpoint (before the cap is set) and loaded
through ``course_lib.qlora.load_4bit`` (NF4, double quantization); LoRA r=32, alpha=64 on all linear layers, batch
1, gradient checkpointing. One measurement is one forward + backward (``longctx.forward_backward`` under fp16
autocast, as the Trainer runs it) on random token ids; no optimizer step (a paged optimizer's state lives in CUDA
unified memory, which the allocator does not count). A length fits when the step ran and the allocator's peak
*reserved* memory stayed within the cap. The longest length is searched from the predicted one
(``longctx.longest_fitting``, exact to 256 tokens when it brackets in time), up to ``--max-len``. Also recorded:
which SDPA kernel each step ran (``t4.SDPAKernels`` on a 1,024-token step), the math kernel's peak against the
memory-efficient one's at 2,048/4,096/8,192 tokens (no cap: the math kernel does not fit a T4 there), a step at
4,096 tokens split into GPU kernel and host time (``t4.step_time``) with its T4 estimate, what the process holds
outside the allocator (the CUDA context and workspaces), the gradients of all techniques against the plain path at
2,048 tokens, and cut-cross-entropy and liger-kernel's fused loss where they import.

Writes ``long_context.csv`` under ``--out``, rewritten after every measurement, so a run cut short keeps what it
measured. The first call on a fresh machine spends a minute or two writing the 16 GB checkpoint
($COURSE_SYNTHETIC_DIR, default /tmp/course_synthetic), reused by later calls while the machine stays up.

On a GPU machine without bitsandbytes (Python 3.12, torch 2.11): fetch the wheels here first
(``../shared/tools/gpu-wheels.sh``), carry ``.whl``, and run

    pip install -q --no-index --no-deps --target /root/site1 .whl/*.whl && export PYTHONPATH=/root/site1:$PWD \
      COURSE_SYNTHETIC_DIR=/root/course_synthetic && python3 benchmarks/long_context.py --out $OUT --budget-s 480

then copy ``$OUT/long_context.csv`` to ``course_lib/resources/measurements/``. Unsloth: long_context_unsloth.py,
in a second call right after (same machine: bitsandbytes and the checkpoint are still there).
"""

from __future__ import annotations

import os

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # before torch touches CUDA

import argparse  # noqa: E402
import csv  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_lib import longctx, memory, qlora, t4  # noqa: E402

GiB = 2**30
STEPS = longctx.STEPS  # (step name, preparation, techniques): each step adds one technique to the one before
FIELDS = ["shape", "step", "prep", "techniques", "kind", "seq_len", "fits", "measured_peak_gib", "reserved_peak_gib",
          "predicted_peak_gib", "error_pct", "predicted_phase", "seconds", "tokens_per_s", "attention", "kernel_s",
          "host_s", "t4_low_s", "t4_high_s", "note", "device", "kernels", "cap_gib", "date"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Bench:
    def __init__(self, args, csv_name: str = "long_context.csv", step_fn=None):
        self.args, self.rows, self.step_fn = args, [], step_fn  # step_fn(model, ids): another library's step
        self.start = time.perf_counter()
        self.csv = args.out / csv_name
        self.debug = args.debug
        if self.debug:
            self.device, self.dtype = torch.device("cpu"), torch.float32
        else:
            self.device, self.dtype = torch.device("cuda", 0), torch.float16
        self.cap = int(args.cap_gib * GiB)
        self.gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        self.last_probe = None  # (tokens, seconds): to guess what the next probe costs
        self.kernels = "all" if args.kernels == "all" else "T4 (" + " + ".join(t4.T4_KERNELS) + ")"
        self.kernel_of: dict[str, str] = {}  # step -> the SDPA kernel(s) it ran
        self.reserve = 0.0  # seconds kept for the steps still to come

    # ------------------------------------------------------------------------------------------ bookkeeping
    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.start)

    def affordable(self, n: int) -> bool:
        """Whether a probe of ``n`` tokens probably ends before the budget (less the time kept for the steps still
        to come) does. A step's time grows a little faster than its length (attention): ~ n^1.5 here."""
        left = self.left() - self.reserve
        if self.last_probe is None:
            return left > 30
        n0, s0 = self.last_probe
        return left > 1.3 * s0 * (n / n0) ** 1.5 + 5

    def record(self, **row) -> dict:
        row.setdefault("attention", self.kernel_of.get(row.get("step"), ""))
        row.update(shape=self.args.shape, device=self.gpu, kernels=self.kernels, cap_gib=round(self.cap / GiB, 3),
                   date=datetime.date.today().isoformat())
        self.rows.append(row)
        self._rewrite()
        return row

    def free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # (the pinned CPU buffers of the offload stay cached, as in a training loop)

    # ------------------------------------------------------------------------------------------ one step
    def probe(self, model, n: int, techniques, *, loss=None, step="", prep="lean", kind="search", predict=True):
        """One forward + backward of ``n`` tokens; a row with whether it fit, its peak and time."""
        cuda = self.device.type == "cuda"
        ids = torch.randint(0, model.config.vocab_size, (1, n), device=self.device)
        longctx.zero_gradients(model)
        self.free()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        ok, note = True, ""
        t = time.perf_counter()
        try:
            if self.step_fn is not None:
                self.step_fn(model, ids)
            else:
                longctx.forward_backward(model, ids, techniques=techniques, loss=loss, check_memory=False,
                                         autocast_dtype=self.dtype if cuda else None)
            if cuda:
                torch.cuda.synchronize()
        except torch.OutOfMemoryError:
            ok, note = False, "OOM"
        except longctx.OffloadMemoryError as e:
            ok, note = False, f"CPU RAM: {e}"
        except RuntimeError as e:
            if "out of memory" not in str(e).lower():
                raise
            ok, note = False, "OOM (" + str(e).split("\n")[0][:80] + ")"
        seconds = time.perf_counter() - t
        del ids
        longctx.zero_gradients(model)
        self.free()
        peak = torch.cuda.max_memory_allocated() if cuda else 0
        reserved = torch.cuda.max_memory_reserved() if cuda else 0
        if ok and cuda and reserved > self.cap:
            ok, note = False, "ran, but reserved more than the cap"
        row = dict(step=step, prep=prep, techniques="+".join(techniques) or "-", kind=kind, seq_len=n, fits=ok,
                   seconds=round(seconds, 2), note=note)
        if ok:
            self.last_probe = (n, seconds)
            row.update(measured_peak_gib=round(peak / GiB, 3), reserved_peak_gib=round(reserved / GiB, 3),
                       tokens_per_s=round(n / seconds, 1))
        if predict and self.step_fn is None:
            try:
                est = longctx.predict_peak(model.config, techniques, n, prep=prep, r=self.args.r,
                                           targets="all-linear", compute_dtype=self.dtype,
                                           attention=self.attention(model, techniques))
                row.update(predicted_peak_gib=round(est.total_bytes / GiB, 3), predicted_phase=est.peak_phase)
                if ok and cuda:
                    row["error_pct"] = round(100 * (est.total_bytes - peak) / peak, 1)
            except ValueError as e:
                row["note"] = (note + "; " if note else "") + f"no prediction: {e}"
        log(f"{step:>20} {kind:<10} {n:>7,} tokens: " + (
            f"fits, peak {peak / GiB:.2f} GiB (reserved {reserved / GiB:.2f}), predicted "
            f"{row.get('predicted_peak_gib', float('nan')):.2f}, {seconds:.1f} s" if ok else f"does not fit ({note})"))
        return self.record(**row)

    def attention(self, model, techniques) -> str:
        """The kernel the prediction assumes: PyTorch's own choice on this GPU under the current settings."""
        if self.debug:
            return longctx.attention_kernel(model.config, techniques)
        kernel = longctx.attention_kernel(model.config, techniques, device=self.device, dtype=self.dtype)
        return kernel if kernel in longctx.ATTENTION_KERNELS else "efficient"

    def which_kernel(self, model, step, techniques, n: int = 1024) -> str:
        """Run one step of ``n`` tokens under ``t4.SDPAKernels`` and remember the kernel(s) it ran for ``step``."""
        ids = torch.randint(0, model.config.vocab_size, (1, n), device=self.device)
        try:
            with t4.SDPAKernels() as seen:
                if self.step_fn is not None:
                    self.step_fn(model, ids)
                else:
                    longctx.forward_backward(model, ids, techniques=techniques, check_memory=False,
                                             autocast_dtype=self.dtype if self.device.type == "cuda" else None)
            names = seen.names
        except Exception as e:  # an out-of-memory error here says what it says
            names = f"failed: {type(e).__name__}"
        longctx.zero_gradients(model)
        self.free()
        self.kernel_of[step] = names
        log(f"{step:>20} attention kernel: {names}")
        return names

    def timed(self, model, step, prep, techniques, n: int = 4096):
        """One step of ``n`` tokens under the profiler: GPU kernel time against host time, and the T4 estimate."""
        if self.device.type != "cuda" or not self.affordable(n):
            return
        ids = torch.randint(0, model.config.vocab_size, (1, n), device=self.device)
        try:
            _, st = t4.step_time(longctx.forward_backward, model, ids, techniques=techniques, check_memory=False,
                                 autocast_dtype=self.dtype)
        except torch.OutOfMemoryError:
            longctx.zero_gradients(model)
            self.free()
            return
        longctx.zero_gradients(model)
        self.free()
        est = t4.estimate_t4_seconds(st)
        low, high = est if isinstance(est, tuple) else ("", "")
        log(f"{step:>20} timed at {n:,}: wall {st.wall_s:.2f} s = kernels {st.kernel_s:.2f} + host {st.host_s:.2f}; "
            f"T4 estimate {low if low == '' else round(low, 1)}-{high if high == '' else round(high, 1)} s")
        self.record(step=step, prep=prep, techniques="+".join(techniques) or "-", kind="time-split", seq_len=n,
                    fits=True, seconds=round(st.wall_s, 3), kernel_s=round(st.kernel_s, 3),
                    host_s=round(st.host_s, 3), t4_low_s=round(low, 2) if low != "" else "",
                    t4_high_s=round(high, 2) if high != "" else "", note="" if low != "" else est,
                    tokens_per_s=round(n / st.wall_s, 1))

    def kernel_table(self, model, steps, lengths=(2048, 4096, 8192)):
        """The math kernel's peak against the memory-efficient one's, uncapped (the math kernel does not fit a T4
        at these lengths: that is the point)."""
        if self.device.type != "cuda":
            return
        total = torch.cuda.get_device_properties(self.device).total_memory
        torch.cuda.set_per_process_memory_fraction(1.0, self.device)
        saved_cap = self.cap
        self.cap = total
        try:
            for step, prep, techniques in steps:
                for n in lengths:
                    if self.left() < 30:
                        return
                    self.probe(model, n, techniques, step=step, prep=prep, kind="kernel-table")
        finally:
            self.cap = saved_cap
            torch.cuda.set_per_process_memory_fraction(saved_cap / total, self.device)

    def search(self, model, step, prep, techniques, guess: int | None = None):
        """The longest length that fits, from ``guess`` (default: the predicted longest); one summary row."""
        ours = guess is None  # the course's path: predicted, so the search starts from the prediction
        if ours:
            predicted = longctx.predicted_longest(model.config, techniques, available=self.cap, prep=prep,
                                                  r=self.args.r, targets="all-linear", compute_dtype=self.dtype,
                                                  step=self.args.step, limit=self.args.max_len,
                                                  attention=self.attention(model, techniques))
        else:
            predicted = guess
        first = min(max(predicted, self.args.step), self.args.max_len)
        stopped = []

        def fits(n):
            if not self.affordable(n):
                stopped.append(n)
                raise TimeoutError
            return self.probe(model, n, techniques, step=step, prep=prep, predict=ours)["fits"]

        probes = []

        def counted(n):
            ok = fits(n)
            probes.append((n, ok))
            return ok

        low, high = 0, None
        try:
            low, high, probes = longctx.longest_fitting(counted, first, step=self.args.step,
                                                        max_probes=self.args.max_probes, limit=self.args.max_len)
        except TimeoutError:
            for n, ok in probes:
                low, high = (max(low, n), high) if ok else (low, n if high is None else min(high, n))
        if high is not None and high - low <= self.args.step:
            note = f"exact to {self.args.step} tokens (fits at {low:,}, not at {high:,})"
        elif high is None and low >= self.args.max_len - self.args.step:
            note = f"fits at the search limit --max-len {self.args.max_len:,}: at least this long"
        else:
            note = (f"search stopped ({'time budget' if stopped else 'probe budget'}): fits at {low:,}"
                    + (f", not at {high:,}" if high else ""))
        start = "predicted longest" if ours else "search started at"
        log(f"{step:>20} longest: {low:,} tokens ({note}); {start} {predicted:,}")
        return self.record(step=step, prep=prep, techniques="+".join(techniques) or "-", kind="longest",
                           seq_len=low, fits=low > 0, note=f"{note}; {start} {predicted:,}")

    def speed(self, model, step, prep, techniques, lengths, predict=True, repeats: int = 3):
        """Tokens/s at each length: the median of ``repeats`` steps after the first (which also gives the peak)."""
        for n in lengths:
            if not self.affordable(n):
                continue
            row = self.probe(model, n, techniques, step=step, prep=prep, kind="speed", predict=predict)
            if not row["fits"] or self.device.type != "cuda":
                continue
            times = []
            for _ in range(repeats):
                ids = torch.randint(0, model.config.vocab_size, (1, n), device=self.device)
                longctx.zero_gradients(model)
                torch.cuda.synchronize()
                t = time.perf_counter()
                if self.step_fn is not None:
                    self.step_fn(model, ids)
                else:
                    longctx.forward_backward(model, ids, techniques=techniques, check_memory=False,
                                             autocast_dtype=self.dtype)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            longctx.zero_gradients(model)
            self.free()
            median = sorted(times)[len(times) // 2]
            row.update(seconds=round(median, 3), tokens_per_s=round(n / median, 1),
                       note=f"median of {repeats} steps after the first: " + ", ".join(f"{x:.3f}" for x in times))
            self._rewrite()  # the row is in self.rows already: updated in place
            log(f"{step:>20} speed at {n:,}: median {median:.3f} s, {n / median:,.0f} tokens/s")

    def _rewrite(self) -> None:
        tmp = self.csv.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows({k: r.get(k, "") for k in FIELDS} for r in self.rows)
        tmp.replace(self.csv)


# ------------------------------------------------------------------------------------------ the run
def to_lean(model, dtype: torch.dtype) -> None:
    """Undo what PEFT's default preparation did besides checkpointing: the parameters it upcast to fp32 (all but the
    4-bit weights and the adapters) go back to the compute dtype, and the embedding output no longer requires grad."""
    base = model.get_base_model()
    for name, p in base.named_parameters():
        if p.dtype == torch.float32 and "lora_" not in name:
            p.data = p.data.to(dtype)
    if hasattr(base, "disable_input_require_grads"):
        try:
            base.disable_input_require_grads()
        except AttributeError:
            pass


def gradient_vector(model) -> torch.Tensor:
    grads = longctx.adapter_gradients(model)
    return torch.cat([g.float().flatten() for g in grads.values()])


LOSS_SCALE = 2.0**16  # GradScaler's starting scale: fp16 gradients of a long sequence underflow without it


def compare(bench, model, n, techniques, loss, label, loss_scale=None):
    """Loss and adapter gradients of ``techniques``/``loss`` against the plain path at ``n`` tokens (same ids), both
    backpropagated from ``loss_scale`` x loss (default: GradScaler's 2^16 under fp16 autocast, 1 in fp32)."""
    ids = torch.randint(0, model.config.vocab_size, (1, n), device=bench.device,
                        generator=torch.Generator(bench.device).manual_seed(0))
    cuda = bench.device.type == "cuda"
    if loss_scale is None:
        loss_scale = LOSS_SCALE if cuda and bench.dtype == torch.float16 else 1.0
    kw = dict(autocast_dtype=bench.dtype if cuda else None, loss_scale=loss_scale, check_memory=False)
    try:
        longctx.zero_gradients(model)
        ref = longctx.forward_backward(model, ids, **kw)
        g_ref = gradient_vector(model)
        b_grads = [g for k, g in longctx.adapter_gradients(model).items() if "lora_B" in k]  # A's are 0 while B = 0
        zeros = (sum((g == 0).sum().item() for g in b_grads) / max(1, sum(g.numel() for g in b_grads)))
        longctx.zero_gradients(model)
        value = longctx.forward_backward(model, ids, techniques=techniques, loss=loss, **kw)
        g = gradient_vector(model)
        rel = ((g - g_ref).norm() / g_ref.norm().clamp_min(1e-30)).item()
        note = (f"loss {value:.6f} vs plain {ref:.6f}; adapter gradients differ by {rel:.2e} (relative norm); loss "
                f"scale {loss_scale:g}, {zeros:.1%} of the plain path's lora_B gradients are 0")
    except Exception as e:  # a library kernel that does not run here is a result, not a crash
        note = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
    longctx.zero_gradients(model)
    bench.free()
    log(f"equivalence {label}: {note}")
    bench.record(step=label, prep="lean", techniques="+".join(techniques) or "-", kind="equivalence", seq_len=n,
                 note=note)


def run(args) -> list[dict]:
    from peft import get_peft_model

    args.out.mkdir(parents=True, exist_ok=True)
    if args.debug:  # a tiny Llama, registered for this process only: the code path in seconds on a CPU
        from course_lib import models

        models.SYNTHETIC_SHAPES.setdefault("tiny-debug", dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=256, tie_word_embeddings=False, max_position_embeddings=1024))
        args.shape, args.max_len, args.step, args.cap_gib = "tiny-debug", 256, 64, 1e6
    elif not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU (use --debug to check the code path on CPU)")
    bench = Bench(args)
    preset = qlora.Preset(f"synthetic-{args.shape}", f"synthetic:{args.shape}", needs_gpu=not args.debug,
                          seq_len=4096, batch_size=1, steps=1, lr=1e-4, t4_like=True, r=args.r, alpha=2 * args.r,
                          targets="all-linear")
    t = time.perf_counter()
    qlora.synthetic_checkpoint(args.shape, bench.device)  # before the cap: the fp16 model is bigger than 15 GiB
    log(f"checkpoint ready in {time.perf_counter() - t:.0f} s")
    device, dtype = qlora.setup_device(preset)  # the T4 emulation: cap, fp16, TF32 off, a T4's SDPA kernels
    if not args.debug:
        bench.cap = int(min(bench.cap, t4.active().cap_bytes))
        if args.kernels == "all":  # flash and cuDNN attention allowed again: an H100/H200 result, not a T4 one
            t4.limit_attention_kernels(("flash", "efficient", "math", "cudnn"))
    t = time.perf_counter()
    model, _ = qlora.load_4bit(preset, device, dtype)
    log(f"loaded in 4-bit in {time.perf_counter() - t:.0f} s")
    bench.record(step="setup", kind="setup", note=f"checkpoint + 4-bit load {time.perf_counter() - bench.start:.0f} s;"
                 f" torch {torch.__version__}; {os.environ.get('PYTORCH_CUDA_ALLOC_CONF')}; "
                 f"{t4.active() or 'no emulation (CPU)'}")

    limit = getattr(model.config, "max_position_embeddings", None) or args.max_len
    if limit < args.max_len:
        log(f"--max-len {args.max_len:,} is past this model's position limit: searching up to {limit:,}")
        args.max_len = limit
    lora = qlora.lora_config(r=args.r, alpha=2 * args.r, targets="all-linear", dropout=0.05)
    model = get_peft_model(qlora.prepare(model, "default"), lora)
    model.train()
    lengths = [2048, 4096] if not args.debug else [64]
    steps = [s for s in STEPS if not args.steps or s[0] in args.steps]
    for i, (step, prep, techniques) in enumerate(steps):
        bench.reserve = args.reserve_s * (len(steps) - 1 - i)  # the longest sequences come last: keep them time
        if bench.left() < 20:
            log(f"out of time before step {step!r}")
            break
        if prep == "lean" and longctx.causal_lm_parts(model)[0].embed_tokens.weight.dtype == torch.float32:
            to_lean(model, bench.dtype)
        if "no_lora_dropout" in techniques and longctx.lora_dropout(model) > 0:
            longctx.remove_lora_dropout(model)
            compare(bench, model, 64 if args.debug else 2048, longctx.TECHNIQUES, None, "all techniques vs plain")
        try:
            bench.which_kernel(model, step, techniques, n=64 if args.debug else 1024)
            if i == 0 and bench.device.type == "cuda":
                outside_allocator(bench)
            bench.search(model, step, prep, techniques)
            bench.speed(model, step, prep, techniques, lengths)
            if step == "lean" and args.kernel_table:  # the math kernel against the memory-efficient one
                rk = next(s for s in STEPS if s[2] == ("repeat_kv",))
                bench.which_kernel(model, rk[0], rk[2], n=64 if args.debug else 1024)
                bench.kernel_table(model, [(step, prep, techniques), rk])
            if step in args.timed:
                bench.timed(model, step, prep, techniques, 64 if args.debug else 4096)
        except Exception as e:  # one step failing must not lose the others
            log(f"step {step!r} failed: {type(e).__name__}: {e}")
            bench.record(step=step, prep=prep, techniques="+".join(techniques), kind="error", note=str(e)[:200])
            longctx.zero_gradients(model)
            bench.free()

    bench.reserve = 0.0
    # the library losses against ours, where they are installed (Triton kernels: CUDA only)
    import importlib.util

    long_n = 64 if args.debug else min(16384, args.max_len)  # within the position limit (Llama-2: 4,096)
    for impl, module in (("cce", "cut_cross_entropy"), ("liger", "liger_kernel")):
        if bench.left() < 40 or bench.device.type != "cuda" or importlib.util.find_spec(module) is None:
            continue
        compare(bench, model, 2048, longctx.TECHNIQUES[:2], impl, f"loss {impl} vs plain")
        try:
            bench.probe(model, long_n, longctx.TECHNIQUES, loss=impl, step=f"all, loss={impl}", kind="loss-impl",
                        predict=False)
        except Exception as e:
            bench.record(step=f"all, loss={impl}", kind="loss-impl", seq_len=long_n, note=f"failed: {e}"[:200])
    if bench.device.type == "cuda":
        outside_allocator(bench, "at the end of the run")
    log(f"done in {time.perf_counter() - bench.start:.0f} s -> {bench.csv}")
    return bench.rows


def outside_allocator(bench, when: str = "after a 1,024-token step") -> None:
    """What this process holds on the GPU outside PyTorch's allocator after a training step: the CUDA context,
    the kernel images loaded so far, cuBLAS/cuDNN handles and workspaces (all of it out of a T4's 15,095 MiB too)."""
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info(bench.device)
    outside = total - free - torch.cuda.memory_reserved(bench.device)
    log(f"outside the allocator: {outside / 2**20:,.0f} MiB (device used {(total - free) / 2**20:,.0f} MiB, "
        f"allocator reserved {torch.cuda.memory_reserved(bench.device) / 2**20:,.0f} MiB)")
    bench.record(step="outside allocator", kind="overhead", measured_peak_gib=round(outside / GiB, 3),
                 note=f"total - free - reserved {when}, MiB: {outside / 2**20:.0f}")


def arguments(doc: str = __doc__) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="llama-3.1-8b")
    parser.add_argument("--out", type=Path, default=Path("course_lib/resources/measurements"))
    parser.add_argument("--budget-s", type=float, default=540, help="stop measuring after this many seconds")
    parser.add_argument("--cap-gib", type=float, default=memory.usable_bytes("T4") / GiB,
                        help="the allocator's cap (default: a T4's, memory.usable_bytes('T4'))")
    parser.add_argument("--r", type=int, default=32)
    parser.add_argument("--step", type=int, default=256, help="resolution of the search, tokens")
    parser.add_argument("--max-len", type=int, default=131072, help="longest length tried")
    parser.add_argument("--max-probes", type=int, default=5, help="forward + backward passes per search at most")
    parser.add_argument("--reserve-s", type=float, default=40, help="seconds kept for each step still to come")
    parser.add_argument("--debug", action="store_true", help="CPU, a tiny synthetic Llama, no cap: the code path")
    parser.add_argument("--kernels", choices=("t4", "all"), default="t4",
                        help="t4: the T4 emulation's SDPA kernels (efficient, math); all: flash allowed (H100/H200)")
    parser.add_argument("--steps", nargs="*", default=[], help="only these steps of longctx.STEPS (default: all)")
    parser.add_argument("--timed", nargs="*", default=["+ repeat kv", STEPS[-1][0]],
                        help="steps whose 4,096-token step is split into kernel and host time")
    parser.add_argument("--no-kernel-table", dest="kernel_table", action="store_false",
                        help="skip the math vs memory-efficient kernel table (2K/4K/8K, uncapped)")
    return parser


def main() -> None:
    run(arguments().parse_args())


if __name__ == "__main__":
    main()
