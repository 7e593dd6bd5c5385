"""Inter-dataset conflict: the per-task gradients of the shared network, their cosines, and PCGrad.

The paper's conclusion names its limitation: when one model is trained on several datasets, "conflicts
inherent between datasets may affect training", and a de-biasing strategy is left to future work. This
module measures that conflict where it acts, on the gradients of the shared parameters, and implements one
standard remedy from the multi-task literature.

* :func:`task_objectives`: the per-task objectives of one training step at the current parameters: for each
  dataset task ``k`` present in the labeled batch, its supervised loss (``versemi.losses.supervised_loss``,
  Dice + CE) on that task's samples under their own prompt; with ``synthetic``, VerSemi's L_syn
  (``versemi.losses.synthetic_loss``) on a box-mixed pair of the batch halves under the synthetic prompt
  T + 1 (the mix of ``versemi/methods/versemi.py``). One backbone pass for the labeled batch (its BatchNorm
  statistics are the batch's, as in training) and one for the mix.
* :func:`objective_gradients`: the gradient of each objective with respect to the shared parameters
  (``torch.autograd.grad``: the parameters' ``.grad`` are left alone), flattened per layer group
  (:func:`layer_groups`: ``encoder``, ``decoder``, ``head`` = the pre-head convolution, the controller and
  whatever produces the prompt-dependent head; ``all``).
* :func:`conflict_scalars`: their pairwise cosine similarities and norms per group, as the flat
  ``conflict/<group>/cos/<a>~<b>`` and ``conflict/<group>/norm/<a>`` scalars the trainer logs to
  ``metrics.csv`` and TensorBoard; :func:`conflict_table` reads them back as a long table and
  :func:`mean_cosine_matrix` averages them into the task x task matrix.
* :func:`pcgrad`: gradient surgery (Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020):
  each task's gradient is projected off the normal plane of every other task's gradient it conflicts with
  (negative inner product), the others taken in a random order, and the projected gradients are summed.
* :class:`ConflictProbe`: a method mixin that, every ``probe_every`` steps, logs :func:`conflict_scalars`
  of the step's batch at the parameters before the update, without changing the training: the random
  streams (``ctx.rng``, torch's) and BatchNorm's running statistics are restored after the probe, and no
  ``.grad`` is touched (tested against the unprobed method: the same losses and weights).

Task names are the datasets' (``versemi.data.registry``) and ``synthetic`` for prompt T + 1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from versemi.data.registry import ALL_DATASETS, TASK_TO_DATASET
from versemi.losses import supervised_loss, synthetic_loss
from versemi.mixing import box_mask, mix

SYNTHETIC = "synthetic"
GROUPS = ("encoder", "decoder", "head")
PREFIX = "conflict"


# ------------------------------------------------------------------------------------------ the groups
def layer_groups(net: torch.nn.Module) -> dict[str, list[tuple[str, torch.nn.Parameter]]]:
    """The trainable parameters of the prompted V-Net (``versemi/model.py``) by layer group: ``encoder``
    (``block_one`` .. ``block_five`` and the down-sampling convolutions ``*_dw``), ``decoder`` (the
    up-sampling blocks ``*_up`` and ``block_six`` .. ``block_nine``) and ``head`` (everything after the
    decoder: ``precls_conv``, the controller and its global pooling, or the multi / static heads). Every
    parameter is in exactly one group."""
    enc = ("block_one", "block_two", "block_three", "block_four", "block_five")
    dec = ("block_six", "block_seven", "block_eight", "block_nine")
    out: dict[str, list] = {g: [] for g in GROUPS}
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        top = name.split(".")[0]
        if top.endswith("_up") or top in dec:
            out["decoder"].append((name, p))
        elif top.endswith("_dw") or top in enc:
            out["encoder"].append((name, p))
        else:
            out["head"].append((name, p))
    return out


# ------------------------------------------------------------------------------------- the objectives
def task_name(task: int, synthetic_task: int | None = None) -> str:
    """The dataset of prompt ``task`` (``pancreas``, ``la``, ``spleen``, ``lung``), ``synthetic`` for the
    synthetic prompt, else ``task<k>``."""
    if synthetic_task is not None and int(task) == int(synthetic_task):
        return SYNTHETIC
    return TASK_TO_DATASET.get(int(task), f"task{int(task)}")


def task_order(names) -> list[str]:
    """The distinct task names in the paper's order: the datasets (pancreas, la, spleen, lung), other
    names, then ``synthetic``."""
    names = list(dict.fromkeys(names))
    rank = {d: i for i, d in enumerate(ALL_DATASETS)}
    return sorted(names, key=lambda n: (n == SYNTHETIC, rank.get(n, len(rank)), n))


def task_losses(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
                synthetic_task: int | None = None) -> dict[str, torch.Tensor]:
    """Task name -> L_sup (``versemi.losses.supervised_loss``) of the samples of that task among ``logits``
    (B, 2, D, H, W) and ``y`` (B, D, H, W), ``t`` (B,) their prompts, in prompt order."""
    out = {}
    for k in sorted(int(v) for v in torch.unique(t)):
        idx = (t == k).nonzero(as_tuple=True)[0]
        out[task_name(k, synthetic_task)] = supervised_loss(logits[idx], y[idx])
    return out


def task_objectives(net, lab: Mapping, synthetic_task: int | None = None, rng: np.random.Generator | None = None,
                    mask_ratio: float = 2 / 3) -> dict[str, torch.Tensor]:
    """Task name -> scalar loss at the current parameters (module docstring). ``lab``: ``image``
    (B, 1, D, H, W), ``label`` (B, D, H, W), ``task`` (B,). ``synthetic_task``: the synthetic prompt (T + 1),
    whose L_syn needs ``rng`` for the box mask (cube side ``mask_ratio``) and at least two samples; None:
    dataset tasks only (a Uni- baseline has no synthetic task)."""
    x, y, t = lab["image"], lab["label"], lab["task"]
    out = task_losses(net(x, t), y, t, synthetic_task)
    if synthetic_task is not None and x.shape[0] >= 2:
        if rng is None:
            raise ValueError("task_objectives: the synthetic task needs rng for its box mask")
        h = x.shape[0] // 2
        m = box_mask(h, tuple(x.shape[2:]), mask_ratio, rng, device=x.device)
        feats = net.backbone(mix(x[:h], x[h:2 * h], m))
        out[SYNTHETIC] = synthetic_loss(net.head(feats, synthetic_task), mix(y[:h].float(), y[h:2 * h].float(), m))
    return out


def objective_gradients(objectives: Mapping[str, torch.Tensor], net,
                        retain_graph: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """Task -> group -> the flattened gradient (float32, detached) of the task's objective with respect to
    the group's parameters (:func:`layer_groups`), plus ``all`` (the groups concatenated). Parameters an
    objective does not reach get zeros. ``.grad`` is not touched. ``retain_graph``: keep the graph after
    the last objective (the caller back-propagates it again)."""
    groups = layer_groups(net)
    params = _in_group_order(groups)
    sizes = {g: sum(p.numel() for _, p in groups[g]) for g in GROUPS}
    names = list(objectives)
    out = {}
    for i, name in enumerate(names):
        flat = flat_gradient(objectives[name], params, retain_graph=retain_graph or i < len(names) - 1)
        parts = dict(zip(GROUPS, torch.split(flat, [sizes[g] for g in GROUPS])))
        out[name] = {**parts, "all": flat}
    return out


def flat_gradient(loss: torch.Tensor, params, retain_graph: bool = False) -> torch.Tensor:
    """The gradient of ``loss`` with respect to ``params`` (``torch.autograd.grad``, ``.grad`` untouched) as one
    flat float32 vector in ``params``' order, zeros for the parameters ``loss`` does not reach."""
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float() for g, p in zip(grads, params)])


# ------------------------------------------------------------------------------------ the measurement
def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two flat vectors (NaN when one of them is zero)."""
    na, nb = float(a.norm()), float(b.norm())
    return float(torch.dot(a, b)) / (na * nb) if na > 0 and nb > 0 else float("nan")


def conflict_scalars(grads: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, float]:
    """The flat scalars of :func:`objective_gradients`' output: ``conflict/<group>/cos/<a>~<b>`` for every
    pair of tasks (in the given order, ``a`` before ``b``) and ``conflict/<group>/norm/<a>`` (L2 norm) for
    every group including ``all``."""
    names = list(grads)
    out = {}
    for group in (*GROUPS, "all"):
        for i, a in enumerate(names):
            out[f"{PREFIX}/{group}/norm/{a}"] = float(grads[a][group].norm())
            for b in names[i + 1:]:
                out[f"{PREFIX}/{group}/cos/{a}~{b}"] = cosine(grads[a][group], grads[b][group])
    return out


def conflict_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """The conflict scalars of a run's ``metrics.csv`` (``step`` and the ``conflict/...`` columns; ``method``
    and ``seed`` too when present, as in a study's ``conflict`` table) as a long table ``[method, seed,] step,
    group, kind, a, b, value`` (``kind``: ``cos`` or ``norm``; ``b`` empty for a norm), one line per probed
    step and scalar."""
    ids = [c for c in ("method", "seed", "step") if c in metrics.columns]
    cols = [c for c in metrics.columns if c.startswith(PREFIX + "/")]
    long = metrics[[*ids, *cols]].melt(id_vars=ids, var_name="key", value_name="value").dropna(subset=["value"])
    parts = long["key"].str.split("/", expand=True)
    pair = parts[3].str.split("~", expand=True)
    second = pair[1] if 1 in pair.columns else pd.Series([None] * len(pair), index=pair.index)
    out = long[ids].reset_index(drop=True).assign(
        step=long["step"].astype(int).to_numpy(), group=parts[1].to_numpy(), kind=parts[2].to_numpy(),
        a=pair[0].to_numpy(), b=second.fillna("").to_numpy(), value=long["value"].astype(float).to_numpy())
    return out.sort_values([*[c for c in ids if c != "step"], "group", "kind", "a", "b", "step"], ignore_index=True)


def mean_cosine_matrix(table: pd.DataFrame, group: str = "all", tasks: Sequence[str] | None = None,
                       steps: tuple[int, int] | None = None) -> pd.DataFrame:
    """Task x task matrix of the mean cosine over the probed steps (``steps``: an inclusive range) of one
    layer group of :func:`conflict_table`; symmetric, 1 on the diagonal, NaN for a pair never probed. Tasks in
    ``tasks``' order (default: :func:`task_order`)."""
    t = table[(table["group"] == group) & (table["kind"] == "cos")]
    if steps is not None:
        t = t[(t["step"] >= steps[0]) & (t["step"] <= steps[1])]
    names = list(tasks) if tasks is not None else task_order([*t["a"], *t["b"]])
    cells = np.full((len(names), len(names)), np.nan)
    np.fill_diagonal(cells, 1.0)
    mat = pd.DataFrame(cells, index=names, columns=names)
    for (a, b), v in t.groupby(["a", "b"])["value"].mean().items():
        if a in mat.index and b in mat.index:
            mat.loc[a, b] = mat.loc[b, a] = v
    return mat


# ------------------------------------------------------------------------------------------ the remedy
def pcgrad(grads: Sequence[torch.Tensor], rng: np.random.Generator | None = None) -> list[torch.Tensor]:
    """PCGrad's projected gradients (Yu et al., NeurIPS 2020, Algorithm 1): for each task ``i``, start from
    ``g_i`` and, for every other task ``j`` in a random order (``rng``; the given order without one), if the
    current ``g_i . g_j < 0`` subtract its projection on ``g_j``: ``g_i -= (g_i . g_j) / |g_j|^2 g_j``.
    The projections use the original ``g_j``. A task whose gradient conflicts with no other is returned
    unchanged. Flat tensors of one size in, a list of the same length out (sum them for the update)."""
    out = []
    n = len(grads)
    for i in range(n):
        g = grads[i].clone()
        others = [j for j in range(n) if j != i]
        if rng is not None:
            others = [others[k] for k in rng.permutation(len(others))]
        for j in others:
            dot = torch.dot(g, grads[j])
            nj = torch.dot(grads[j], grads[j])
            if dot < 0 and nj > 0:
                g = g - dot / nj * grads[j]
        out.append(g)
    return out


def set_flat_grad(params: Sequence[torch.nn.Parameter], flat: torch.Tensor) -> None:
    """Write a flat gradient (the layout of :func:`objective_gradients`' ``all``) into ``params``' ``.grad``."""
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.dtype).clone()
        offset += n
    if offset != flat.numel():
        raise ValueError(f"set_flat_grad: {flat.numel()} values for {offset} parameters")


def _in_group_order(groups: Mapping[str, list]) -> list[torch.nn.Parameter]:
    return [p for g in GROUPS for _, p in groups[g]]


def group_params(net) -> list[torch.nn.Parameter]:
    """The parameters in the order of :func:`objective_gradients`' flat ``all`` vector."""
    return _in_group_order(layer_groups(net))


# ------------------------------------------------------------------------------------------- the probe
@contextlib.contextmanager
def preserved_state(net: torch.nn.Module, rng: np.random.Generator | None = None):
    """Run a block without leaving a trace on the training: the network's buffers (BatchNorm's running
    statistics and counters), torch's random state (dropout) and ``rng``'s state are restored after it."""
    buffers = {k: b.detach().clone() for k, b in net.named_buffers()}
    state = rng.bit_generator.state if rng is not None else None
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            with torch.no_grad():
                for k, b in net.named_buffers():
                    b.copy_(buffers[k])
            if rng is not None:
                rng.bit_generator.state = state


def probe_rng(seed: int, step: int) -> np.random.Generator:
    """The probe's own generator for its synthetic mask: a function of (run seed, step), apart from the
    step's ``ctx.rng``."""
    return np.random.default_rng([int(seed), int(step), 0x5EED])


class ConflictProbe:
    """Mixin for a :class:`~versemi.methods.base.Method` (put it first): with option ``probe_every`` = N > 0,
    every N-th step (and the first) logs :func:`conflict_scalars` of the step's labeled batch at the
    parameters before the update (the synthetic task when the method has one: ``probe_synthetic``), then
    trains exactly as the method does (module docstring). ``probe_every`` = 0 costs nothing."""

    probe_synthetic = True

    def probe(self, ctx, lab: dict) -> dict[str, float]:
        seed = ctx.cfg.seed if ctx.cfg is not None else 0
        net = ctx.net
        with preserved_state(net, ctx.rng):
            objectives = task_objectives(net, lab, ctx.synthetic_task if self.probe_synthetic else None,
                                         probe_rng(seed, ctx.step), self.options.get("mask_ratio", 2 / 3))
            if len(objectives) < 2:
                return {}
            return conflict_scalars(objective_gradients(objectives, net))

    def update_step(self, ctx, lab: dict, unlab: dict | None):
        """The method's own step and update (a subclass that changes the update overrides this)."""
        return super().train_step(ctx, lab, unlab)

    def train_step(self, ctx, lab: dict, unlab: dict | None):
        every = int(self.options.get("probe_every") or 0)
        scalars = self.probe(ctx, lab) if every > 0 and ctx.step % every == 0 else {}
        out = self.update_step(ctx, lab, unlab)
        return {**out, **{k: torch.tensor(v) for k, v in scalars.items()}}

