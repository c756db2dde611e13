"""The compute convention, and the equal-compute configurations the platform derives from it.

A training step's FLOPs split into the *model* (for stage 1: encoder, decoder, bottleneck, CLIP and DINO heads,
text tower, EMA teacher) and the frozen *loss networks* (LPIPS). Equal compute means equal model FLOPs: that is
the axis of VTP's compute-scaling plots, and a loss network is an implementation choice of the objective, not
tokenizer compute (AlexNet LPIPS costs a fraction of VGG LPIPS for the same objective). The engine counts both
on the real step (metrics.json: `model_total_flops`, `loss_network_flops_per_step`).

Before a run exists, `pretrain_step_flops` estimates a step's model FLOPs from the component FLOPs measured on
the meta device (vtp.models.flops) and the batch plan: training passes are forward + backward = 3 forwards, the
blocks skip the samples stochastic depth drops, the teacher runs forward only, iBOT projects the expected number
of masked patches, and under gradient accumulation CLIP's no-grad cache pass adds one forward. The tests hold it
to the engine's count within 2%. Not counted: the weightless placeholder row a micro-batch runs when it draws
none of a subset's rows (one graph for DDP), which matters only for subsets of a few rows per micro-batch.
`train.equal_compute_with: NAME` sets a configuration's steps so that its model FLOPs match configuration
NAME's (`equal_compute_steps`).
"""
from __future__ import annotations

from vtp.config import Config
from vtp.models.flops import measure


def pretrain_step_flops(cfg: Config) -> dict[str, float]:
    """Estimated model FLOPs of one stage-1 optimizer step, per part, and their `total`."""
    spec, aug, loss, drop = cfg.model.spec(), cfg.aug, cfg.loss, cfg.model.drop_path
    full = measure(spec, cfg.data.resolution)["components"]
    sizes = cfg.batch_subsets()

    def encoder(resolution: int, rows: int, rate: float) -> float:
        """One image's encoder FLOPs where a step's `rows` images meet drop-path `rate`: sample-level stochastic
        depth runs the blocks on round(b * (1 - rate)) of the b images of each micro-step's call
        (vtp.models.layers.sample_drop_residual; b as on one process)."""
        e = measure(spec, resolution)["components"]["encoder"]
        b = max(1, rows // cfg.train.grad_accum)
        kept = max(1, round(b * (1 - rate))) / b if rate > 0 else 1.0
        return e["flops"] - e["blocks_flops"] * (1 - min(kept, 1.0))

    parts: dict[str, float] = {}
    if loss.clip:
        n = sizes["clip"]
        per_pair = encoder(cfg.data.resolution, n, drop.clip) + full["text"]["flops"] + full["clip_head"]["flops"]
        passes = 3 + (1 if cfg.train.grad_accum > 1 else 0)  # the accumulation cache pass: one more forward
        parts["clip"] = passes * n * per_pair
    if loss.ssl:
        n, head = sizes["ssl"], full["dino_head"]["flops"]
        g, gs = aug.global_crop_size, encoder(aug.global_crop_size, 2 * n, drop.ssl)
        local = encoder(aug.local_crop_size, aug.local_crops * n, drop.ssl) if aug.local_crops else 0
        masked = aug.mask_probability * sum(aug.mask_ratio) / 2 * (g // spec.patch) ** 2
        student = 2 * gs + aug.local_crops * local + (2 + aug.local_crops + 2 * masked) * head
        teacher = 2 * encoder(g, 2 * n, 0.0) + (2 + 2 * masked) * head
        parts["ssl_student"] = 3 * n * student
        parts["ssl_teacher"] = n * teacher
    if loss.rec:
        n = sizes["rec"]
        parts["rec"] = 3 * n * (encoder(cfg.data.resolution, n, drop.rec) + full["decoder"]["flops"])
    return {**parts, "total": sum(parts.values())}


def equal_compute_steps(cfg: Config, reference: Config) -> int:
    """Steps at which `cfg` spends the model FLOPs `reference` spends in its `train.steps`."""
    ours, theirs = pretrain_step_flops(cfg)["total"], pretrain_step_flops(reference)["total"]
    return max(1, round(reference.train.steps * theirs / ours))
