"""Low-rank intuition: SVD, the best rank-k approximation (Eckart–Young), spectra, and the rank of a fine-tuning update.

Everything here works on 2-D float tensors. The notebook ``01_low_rank_intuition`` uses these functions on real
weight matrices of the embedded model, on a photograph, and on the update a short fine-tuning run makes.
"""

from __future__ import annotations

import math

import torch


def _check_matrix(W) -> torch.Tensor:
    if not isinstance(W, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(W).__name__}; wrap it with torch.as_tensor(...)")
    if W.dim() != 2:
        raise ValueError(
            f"expected a 2-D matrix, got a tensor of shape {tuple(W.shape)}; "
            "reshape it (e.g. W.reshape(W.shape[0], -1)) or pick one matrix from the batch"
        )
    if not W.is_floating_point():
        raise TypeError(f"expected a floating-point matrix, got dtype {W.dtype}; use W.float()")
    if not torch.isfinite(W).all():
        raise ValueError("the matrix contains NaN or Inf; an SVD of it is meaningless: find where they came from")
    return W


def _check_rank(k, W: torch.Tensor) -> int:
    full = min(W.shape)
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"rank k must be an int, got {k!r}")
    if not 1 <= k <= full:
        raise ValueError(f"rank k={k} is out of range for a {W.shape[0]}x{W.shape[1]} matrix: choose 1 <= k <= {full}")
    return k


def svd(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD ``W = U @ diag(S) @ Vh`` computed in float64 (so tiny singular values are trustworthy),
    returned in W's dtype. S is sorted from largest to smallest."""
    W = _check_matrix(W)
    U, S, Vh = torch.linalg.svd(W.double(), full_matrices=False)
    return U.to(W.dtype), S.to(W.dtype), Vh.to(W.dtype)


def singular_values(W: torch.Tensor) -> torch.Tensor:
    """The singular values of W, largest first (float64 internally)."""
    return torch.linalg.svdvals(_check_matrix(W).double()).to(W.dtype)


def rank_k_approx(W: torch.Tensor, k: int) -> torch.Tensor:
    """The best rank-k approximation of W in Frobenius and spectral norm: keep the k largest singular triplets."""
    W = _check_matrix(W)
    k = _check_rank(k, W)
    U, S, Vh = svd(W)
    return (U[:, :k] * S[:k]) @ Vh[:k]


def approx_error(W: torch.Tensor, k: int) -> float:
    """Frobenius norm of ``W - rank_k_approx(W, k)``, measured by forming the difference."""
    W = _check_matrix(W)
    return torch.linalg.matrix_norm((W - rank_k_approx(W, k)).double()).item()


def tail_norm(S: torch.Tensor, k: int) -> float:
    """sqrt(sum of the squared singular values after the k-th): what Eckart–Young says the error must be."""
    if k < 0 or k > S.numel():
        raise ValueError(f"k={k} is out of range for {S.numel()} singular values")
    return S[k:].double().pow(2).sum().sqrt().item()


def energy_captured(S: torch.Tensor, k: int) -> float:
    """Fraction of the squared Frobenius norm ("energy") held by the top k singular values."""
    if not 0 <= k <= S.numel():
        raise ValueError(f"k={k} is out of range for {S.numel()} singular values")
    energy = S.double().pow(2)
    return (energy[:k].sum() / energy.sum()).item() if energy.sum() > 0 else 1.0


def rank_for_energy(S: torch.Tensor, fraction: float = 0.9) -> int:
    """The smallest k whose top-k singular values hold at least ``fraction`` of the energy."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    energy = S.double().pow(2)
    cumulative = energy.cumsum(0) / energy.sum()
    return int(torch.searchsorted(cumulative, torch.tensor(fraction, dtype=torch.float64) - 1e-12).item()) + 1


def effective_rank(S: torch.Tensor) -> float:
    """Roy & Vetterli's effective rank: exp of the entropy of the normalised singular values.

    It equals n for n equal singular values and 1 for a rank-1 matrix: a smooth "how many directions matter".
    """
    p = S.double() / S.double().sum()
    p = p[p > 0]
    return math.exp(-(p * p.log()).sum().item())


def storage_count(m: int, n: int, r: int) -> tuple[int, int]:
    """Numbers stored by an m x n matrix (m = d_out, n = d_in), and by its rank-r factors B (m x r) and A (r x n)."""
    for name, value in (("m", m), ("n", n), ("r", r)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    return m * n, r * (m + n)


def random_like(W: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A Gaussian matrix of W's shape and W's standard deviation: the "no structure" baseline."""
    W = _check_matrix(W)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(W.shape, generator=g, dtype=torch.float32).to(W.dtype) * W.float().std().to(W.dtype)


def spectrum_summary(W: torch.Tensor, ks: tuple[int, ...] = (8, 32)) -> dict[str, float]:
    """Shape-independent facts about a matrix's spectrum: effective rank, energy in the top k, rank for 90%."""
    S = singular_values(W)
    summary = {"effective rank": effective_rank(S), "rank for 90% energy": rank_for_energy(S, 0.9)}
    for k in ks:
        summary[f"energy in top {k}"] = energy_captured(S, min(k, S.numel()))
    return summary


def finetune_one_layer(model, tokenizer, module_name: str, texts: list[str], *, steps: int = 30,
                       lr: float = 1e-4, batch_size: int = 8, seed: int = 0, progress: bool = True):
    """Fully fine-tune the weight of one linear layer (all else frozen) with AdamW for ``steps`` steps on
    next-token prediction over ``texts``. Returns ``(W_before, W_after, losses)``; the model keeps the update."""
    from tqdm.auto import tqdm

    modules = dict(model.named_modules())
    if module_name not in modules or not hasattr(modules[module_name], "weight"):
        linear = [n for n, m in modules.items() if isinstance(m, torch.nn.Linear)]
        raise KeyError(f"no linear layer named {module_name!r}; e.g. {linear[:4]} ... ({len(linear)} in all)")
    layer = modules[module_name]
    if not texts:
        raise ValueError("texts is empty: give at least one training sentence")
    torch.manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    layer.weight.requires_grad_(True)
    before = layer.weight.detach().clone()
    optimizer = torch.optim.AdamW([layer.weight], lr=lr, weight_decay=0.0)
    losses = []
    model.train()
    for step in tqdm(range(steps), desc=f"fine-tuning {module_name}", disable=not progress):
        start = (step * batch_size) % len(texts)
        batch = tokenizer(texts[start:start + batch_size] or texts[:batch_size], return_tensors="pt", padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    layer.weight.requires_grad_(False)
    return before, layer.weight.detach().clone(), losses


# --------------------------------------------------------------------------- what a rank-k weight does to the model
def answer_labels(tokenizer, texts: list[str], answer_after: str = "A:"):
    """Tokenize ``texts`` (padded) and label only what follows ``answer_after``: the prompt, the marker and the
    padding get -100, so a loss counts the answer tokens alone. Returns ``(batch, labels)``."""
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    for i, text in enumerate(texts):
        if answer_after not in text:
            raise ValueError(f"text {i} ({text!r}) has no {answer_after!r}: nothing marks where its answer starts")
        prompt = tokenizer(text[: text.index(answer_after) + len(answer_after)])["input_ids"]
        if batch["input_ids"][i, : len(prompt)].tolist() != prompt:  # right padding and a clean token boundary
            raise ValueError(f"text {i}: its prompt does not tokenize to a prefix of the whole text; "
                             "pad on the right (tokenizer.padding_side = 'right') and end the prompt at a word")
        labels[i, : len(prompt)] = -100
    return batch, labels


@torch.no_grad()
def answer_loss(model, tokenizer, texts: list[str], answer_after: str = "A:") -> float:
    """Mean next-token loss over the answer tokens of ``texts`` only (see ``answer_labels``)."""
    batch, labels = answer_labels(tokenizer, texts, answer_after)
    return model(**batch, labels=labels).loss.item()


class weights_replaced:
    """``with weights_replaced(model, {name: W}):`` runs the block with those linear weights, then puts the
    originals back, whatever happens inside."""

    def __init__(self, model, weights: dict[str, torch.Tensor]):
        modules = dict(model.named_modules())
        missing = [name for name in weights if name not in modules]
        if missing:
            raise KeyError(f"no module named {missing[0]!r} in this model")
        self.modules = {name: modules[name] for name in weights}
        self.weights = weights

    @torch.no_grad()
    def __enter__(self):
        self.originals = {name: m.weight.detach().clone() for name, m in self.modules.items()}
        for name, m in self.modules.items():
            m.weight.copy_(self.weights[name])
        return self

    @torch.no_grad()
    def __exit__(self, *exc):
        for name, m in self.modules.items():
            m.weight.copy_(self.originals[name])
        return False


def linear_weights(model, *, skip: tuple[str, ...] = ("lm_head",)) -> dict[str, torch.Tensor]:
    """``{name: weight}`` of every ``nn.Linear`` of ``model`` but ``skip`` (the tied output head by default)."""
    return {name: m.weight.detach() for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and not any(s in name for s in skip)}


def low_rank_weights(weights: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """The best rank-k approximation of every matrix in ``weights``, the same matrix ``rank_k_approx`` gives,
    computed faster for many matrices: the top-k eigenvectors of the smaller Gram matrix (W Wᵀ or Wᵀ W, float64)
    are W's top-k singular vectors, and projecting W onto them is the truncated SVD (on a CPU this takes about
    half the time of a float32 SVD, a fifth of a float64 one)."""
    out = {}
    for name, W in weights.items():
        W = _check_matrix(W)
        k_here = _check_rank(min(k, min(W.shape)), W)
        D = W.double()
        wide = D.shape[0] <= D.shape[1]
        _, vectors = torch.linalg.eigh(D @ D.T if wide else D.T @ D)  # eigenvalues ascending: the top k are last
        top = vectors[:, -k_here:]
        out[name] = (top @ (top.T @ D) if wide else (D @ top) @ top.T).to(W.dtype)
    return out
