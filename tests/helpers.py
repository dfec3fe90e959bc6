"""Helpers shared by test modules: tiny networks, batches and references (not collected: no
``test_`` prefix).

Test modules import them relatively (``from .helpers import make_ds``), as pytest's
``--import-mode=importlib`` imports every module of ``tests/`` as ``tests.<module>``, in the xdist
run and in a single-file run alike; a subprocess script puts ``tests/`` on ``sys.path`` and imports
``helpers``. No test module imports another (``test_suite_imports.py`` checks).
"""

from __future__ import annotations

import itertools

import torch
from mmseg_robust.planners.plans import ConfigurationPlan

from mmseg_robust.networks import NETWORKS, DynamicSharingUNet, RegionNetwork
from mmseg_robust.precision import make_precision
from mmseg_robust.segmentation_task import SegmentationTask
from mmseg_robust.strategies import StrategyEnvironment
from mmseg_robust.strategies.base import fused_subset_losses
from mmseg_robust.strategies.subset_gradients import SubsetGradientBuffer

MODALITIES = ("flair", "t1", "t1ce", "t2")
#: Every non-empty subset of the four modalities, as lists of indices (the networks' ``fuse`` takes them).
ALL_SUBSETS = [list(s) for k in range(1, 5) for s in itertools.combinations(range(4), k)]
#: Mixed availability; t1 (index 1) is absent from the whole batch.
MIXED = torch.tensor([[1, 0, 1, 1],
                      [1, 0, 0, 0],
                      [0, 0, 1, 1],
                      [1, 0, 1, 0]], dtype=torch.bool)

FULL_PRECISION = make_precision("off", torch.device("cpu"))
CPU = StrategyEnvironment(torch.device("cpu"))
TASK = SegmentationTask()


# --------------------------------------------------------------------------- networks (test_networks & co.)
def topology(dims: int, n_conv: int = 2) -> dict:
    """The constructor arguments of a tiny network (an int kernel or stride stands for every axis)."""
    if dims == 3:
        return {"spatial_dims": 3, "features_per_stage": (4, 8, 16), "kernel_sizes": (3, 3, 3), "strides": (1, 2, 2),
                "n_conv_per_stage": n_conv}
    return {"spatial_dims": 2, "features_per_stage": (4, 8, 16, 32), "kernel_sizes": (3, 3, 3, 3),
            "strides": (1, 2, 2, 2), "n_conv_per_stage": n_conv}


def make_net(kind: str, dims: int, modalities=MODALITIES, n_conv: int = 2, **kwargs) -> RegionNetwork:
    return NETWORKS[kind](modalities=modalities, **topology(dims, n_conv), **kwargs)


def plan(dims: int) -> ConfigurationPlan:
    """A planner's plan with :func:`topology`'s network (kernels and strides spelled per axis)."""
    args = topology(dims)
    ones = (1,) * dims
    return ConfigurationPlan(name=f"{dims}d", spatial_dims=dims, patch_size=(16,) * dims, batch_size=2,
                             features_per_stage=args["features_per_stage"],
                             kernel_sizes=tuple((k,) * dims for k in args["kernel_sizes"]),
                             strides=(ones,) + tuple((s,) * dims for s in args["strides"][1:]),
                             data_identifier="test", estimated_memory_gb=0.1)


def make_ds(dims: int, deep_supervision: bool = False, seed: int = 0, fusion: str = "mean",
            n_conv: int = 2) -> DynamicSharingUNet:
    torch.manual_seed(seed)
    net = make_net("ds", dims, n_conv=n_conv, deep_supervision=deep_supervision, fusion=fusion)
    _randomize_affine(net)
    return net


def _randomize_affine(net: torch.nn.Module) -> None:
    """Norm affine parameters start at 1/0; make them modality-specific so that mixing them up shows."""
    with torch.no_grad():
        for name, param in net.named_parameters():
            if "norm" in name:
                param.add_(0.2 * torch.randn_like(param))


def images_for(dims: int, batch: int = 4, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    spatial = (16, 16, 16) if dims == 3 else (32, 32)
    return torch.randn((batch, 4) + spatial, generator=generator)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    """Equal up to ``rel`` of the largest magnitude of ``expected`` (at least 1e-3)."""
    actual, expected = actual.detach(), expected.detach()
    scale = max(float(expected.abs().max()), 1e-3)
    assert float((actual - expected).abs().max()) <= rel * scale, \
        f"max diff {float((actual - expected).abs().max()):.3g} vs scale {scale:.3g}"


# --------------------------------------------------------------------------- strategies (test_gmd & co.)
def tiny_ds(seed: int = 0, deep_supervision: bool = True) -> DynamicSharingUNet:
    torch.manual_seed(seed)
    net = DynamicSharingUNet(3, MODALITIES, features_per_stage=(3, 6), kernel_sizes=(3, 3), strides=(1, 2),
                             deep_supervision=deep_supervision)
    with torch.no_grad():  # modality-specific norms, so that a mix-up would show
        for name, param in net.named_parameters():
            if "norm" in name:
                param.add_(0.3 * torch.randn_like(param))
    return net


def tiny_batch(seed: int = 1, available=((1, 1, 0, 1), (1, 0, 1, 1))) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"inputs": torch.randn((2, 4, 8, 8, 8), generator=generator),
            "available": torch.tensor(available, dtype=torch.bool),
            "target": (torch.rand((2, 3, 8, 8, 8), generator=generator) > 0.6).float()}


def direct_pcgrad(vectors: torch.Tensor, orders) -> torch.Tensor:
    """PCGrad on materialised vectors (float64), the textbook way: the mean of the projected gradients."""
    projected = []
    for i, order in enumerate(orders):
        g = vectors[i].clone()
        for j in order:
            dot = g @ vectors[j]
            if dot < 0:
                g = g - dot / (vectors[j] @ vectors[j]) * vectors[j]
        projected.append(g)
    return torch.stack(projected).mean(0)


def filled_buffer(net, batch, subsets) -> SubsetGradientBuffer:
    """The per-subset gradients of ``subsets`` on ``batch`` (per-modality graphs), one row each."""
    branches = net.forward_branches(batch["inputs"], batch["available"], batched=False)
    losses = fused_subset_losses(net, branches.logits, batch["available"], batch["target"], subsets, TASK)
    buffer = SubsetGradientBuffer(net, len(subsets))
    for i, (loss, subset) in enumerate(zip(losses, subsets)):
        buffer.fill(i, loss, subset)
    return buffer
