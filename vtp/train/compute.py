"""The compute convention, and the equal-compute configurations the platform derives from it.

A training step's FLOPs split into the *model* (for stage 1: encoder, decoder, bottleneck, CLIP and DINO heads,
text tower, EMA teacher) and the frozen *loss networks* (LPIPS). Equal compute means equal model FLOPs: that is
the axis of VTP's compute-scaling plots, and a loss network is an implementation choice of the objective, not
tokenizer compute (AlexNet LPIPS costs a fraction of VGG LPIPS for the same objective). The engine counts both
on the real step (metrics.json: `model_total_flops`, `loss_network_flops_per_step`).

Before a run exists, `pretrain_step_flops` estimates a step's model FLOPs from the component FLOPs measured on
the meta device (vtp.models.flops) and the batch plan: training passes are forward + backward = 3 forwards, the
teacher runs forward only, iBOT projects the expected number of masked patches, and under gradient accumulation
CLIP's no-grad cache pass adds one forward. The tests hold it to the engine's count. `train.equal_compute_with:
NAME` sets a configuration's steps so that its model FLOPs match configuration NAME's (`equal_compute_steps`).
"""
from __future__ import annotations

from vtp.config import Config
from vtp.models.flops import measure


def pretrain_step_flops(cfg: Config) -> dict[str, float]:
    """Estimated model FLOPs of one stage-1 optimizer step, per part, and their `total`."""
    spec, aug, loss = cfg.model.spec(), cfg.aug, cfg.loss
    full = measure(spec, cfg.data.resolution)["components"]
    enc, dec = full["encoder"]["flops"], full["decoder"]["flops"]
    sizes = cfg.batch_subsets()
    parts: dict[str, float] = {}
    if loss.clip:
        per_pair = enc + full["text"]["flops"] + full["clip_head"]["flops"]
        passes = 3 + (1 if cfg.train.grad_accum > 1 else 0)  # the accumulation cache pass: one more forward
        parts["clip"] = passes * sizes["clip"] * per_pair
    if loss.ssl:
        n, head = sizes["ssl"], full["dino_head"]["flops"]
        g = measure(spec, aug.global_crop_size)["components"]["encoder"]["flops"]
        local = measure(spec, aug.local_crop_size)["components"]["encoder"]["flops"] if aug.local_crops else 0
        masked = aug.mask_probability * sum(aug.mask_ratio) / 2 * (aug.global_crop_size // spec.patch) ** 2
        student = 2 * g + aug.local_crops * local + (2 + aug.local_crops + 2 * masked) * head
        teacher = 2 * g + (2 + 2 * masked) * head
        parts["ssl_student"] = 3 * n * student
        parts["ssl_teacher"] = n * teacher
    if loss.rec:
        parts["rec"] = 3 * sizes["rec"] * (enc + dec)
    return {**parts, "total": sum(parts.values())}


def equal_compute_steps(cfg: Config, reference: Config) -> int:
    """Steps at which `cfg` spends the model FLOPs `reference` spends in its `train.steps`."""
    ours, theirs = pretrain_step_flops(cfg)["total"], pretrain_step_flops(reference)["total"]
    return max(1, round(reference.train.steps * theirs / ours))
