"""The one training loop. A stage subclasses `Trainer` and supplies only what is its own: the modules it trains
and checkpoints, their optimizers, one micro-step (forward + backward), the update after it, and its export.

The engine owns everything else, the same for every stage: resume from the last checkpoint whose fingerprint
matches (or set the old checkpoints aside, never deleting them), the collective stop decision (every rank
checkpoints the same step and exits together), the NaN policy (a skipped step restores the buffers it touched,
e.g. the DINO centres), FLOP and MFU accounting per device, dvclive, checkpoint cadence and pruning, `run.json`,
and the final `metrics.json`.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from vtp import dist as vdist
from vtp.config import Config, ConfigError, to_dict
from vtp.fileio import write_json_atomic
from vtp.log import log, progress
from vtp.models.flops import FlopCounterMode  # with CPU attention registered
from vtp.runinfo import RunRecord
from vtp.stages import get_stage
from vtp.train import checkpoint as ckpt
from vtp.train.accounting import Meter, device_peak, utilisation
from vtp.train.data import Loader, stream
from vtp.train.live import Live
from vtp.train.runtime import GracefulStop, Interrupted, NonFiniteLoss, first_non_finite, set_determinism, uses_bf16

FLOPS_CONVENTION = ("2 x MACs, forward + backward, counted by torch.utils.flop_counter on one real micro-step; "
                    "model_* excludes the frozen loss networks (LPIPS), which loss_network_* counts: equal compute "
                    "means equal model_total_flops (vtp.train.compute)")


def local_micro_batch(batch_size: int, grad_accum: int, world_size: int, section: str = "train") -> int:
    per = world_size * grad_accum
    if batch_size % per:
        raise ConfigError(f"{section}.batch_size = {batch_size}: must be divisible by world size x grad_accum "
                          f"= {world_size} x {grad_accum}")
    return batch_size // per


class Trainer:
    stage: str  # the registry name: the `vtp` subcommand, the DVC stage, the Prefect task
    data_seed_offset = 0  # a stage reading the same shards as another draws its own order

    def __init__(self, cfg: Config, info: vdist.DistInfo, out: Path, total_steps: int, resume: bool,
                 batch_size: int | None = None, grad_accum: int | None = None, section: str = "train"):
        """`batch_size` (global, per optimizer step) and `grad_accum` default to `train:`'s; a stage with its own
        section (the DiT) passes its own. Cadence, precision and the NaN policy always come from `train:`."""
        self.cfg, self.info, self.out, self.total_steps, self.resume = cfg, info, Path(out), total_steps, resume
        self.batch_size = cfg.train.batch_size if batch_size is None else batch_size
        self.grad_accum = cfg.train.grad_accum if grad_accum is None else grad_accum
        self.ckpt_dir = self.out / "checkpoints"
        self.fingerprint = get_stage(self.stage).fingerprint(cfg)
        self.micro = local_micro_batch(self.batch_size, self.grad_accum, info.world_size, section)
        self.step, self.skipped, self.samples = 0, 0, 0
        self.bad_samples = 0  # samples the data stream dropped (undecodable, wrong size): counted, never fatal
        self.flops_per_step_device: float | None = None
        self.flops_per_step: float | None = None
        self.loss_network_flops_per_step: float = 0.0
        self.sharded_root: nn.Module | None = None  # an FSDP2 root, unsharded around save_images
        self.last: dict[str, float] = {}  # the last logged means: kept in checkpoints, so a resumed run reports them
        self._imaged_step: int | None = None
        set_determinism(cfg.train.deterministic)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank

    # -- what a stage supplies ------------------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        """The bare (unwrapped) modules a checkpoint holds, by file name."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Each optimizer under the name of the module (in `modules()`) it updates."""
        raise NotImplementedError

    def make_loader(self) -> Loader:
        raise NotImplementedError

    def before_step(self) -> None:
        """Schedules for `self.step` (learning rates, ramps)."""

    def prepare_step(self, micro_batches: list[dict]) -> None:
        """Whatever one optimizer step computes once over all its micro-batches, before their micro-steps (the
        pretrainer's whole-step CLIP features and SSL targets under gradient accumulation)."""

    def micro_step(self, batch: dict, micro: int, sync: bool) -> dict[str, torch.Tensor]:
        """Forward + backward of one micro-batch; returns the detached terms, `loss` among them."""
        raise NotImplementedError

    def update(self) -> dict[str, float]:
        """Clip, step the optimizers, EMA; returns scalars to log (learning rate, gradient norm, ...)."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Called on every rank after each optimizer step, `self.step` already counted (the DiT keeps snapshots)."""

    def save_images(self, step: int) -> list[tuple[str, Path]]:
        """Called on every rank every `train.image_every` steps; returns (name, png) pairs to log."""
        return []

    def export(self, metrics: dict) -> None:
        """Write the trained model into `self.out` (collective under FSDP; rank 0 writes)."""
        raise NotImplementedError

    def describe(self) -> str:
        return ""

    def loss_network_flops(self) -> float:
        """FLOPs of the frozen loss networks (LPIPS) in the last micro-step counted, on this device: recorded apart
        from the model's, which define equal compute."""
        return 0.0

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def _set_aside(self, why: str) -> None:
        stale = self.ckpt_dir.with_name(f"checkpoints.stale-{time.strftime('%Y%m%d-%H%M%S')}")
        log.warning("%s: moving existing checkpoints to %s (nothing is deleted)", why, stale)
        shutil.move(self.ckpt_dir, stale)

    def _prepare_checkpoints(self) -> None:
        """Resume from the latest matching checkpoint, or set the existing ones aside (fresh or changed run)."""
        ckpt.clean_partial(self.ckpt_dir)
        path = ckpt.latest(self.ckpt_dir)
        saved = ckpt.read_state(path) if path is not None else None
        if saved is not None and self.resume and saved.get("fingerprint") == self.fingerprint:
            state = ckpt.load(path, self.modules(), self.optimizers())
            self.step, self.skipped, self.samples = state["step"], state["skipped_steps"], state["samples_seen"]
            self.bad_samples = state.get("bad_samples_skipped", 0)
            self.last = state.get("last_logged", {})
            # The FLOPs counted on the first step: a resumed run (also a finished one DVC re-runs) reports them.
            counted = state.get("flops") or {}
            if counted.get("per_step_device") is not None:
                self.flops_per_step_device = counted["per_step_device"]
                self.flops_per_step = counted["per_step"]
                self.loss_network_flops_per_step = counted["loss_network_per_step"]
            log.info("resumed from %s (step %d)", path, self.step)
            return
        vdist.barrier()  # every rank has read the folder before rank 0 moves it
        if path is not None and self.info.is_main:
            self._set_aside("--fresh" if not self.resume else f"configuration changed since {path.name}")
        vdist.barrier()

    def save(self) -> None:
        state = {"fingerprint": self.fingerprint, "stage": self.stage, "config": self.cfg.name,
                 "skipped_steps": self.skipped, "samples_seen": self.samples, "last_logged": self.last,
                 "bad_samples_skipped": self.bad_samples,
                 "flops": {"per_step_device": self.flops_per_step_device, "per_step": self.flops_per_step,
                           "loss_network_per_step": self.loss_network_flops_per_step}}
        path = ckpt.save(self.ckpt_dir, self.step, self.modules(), self.optimizers(), state,
                         self.cfg.train.keep_checkpoints)
        log.info("checkpoint %s", path)

    # -- one optimizer step ---------------------------------------------------------------------------------------
    def _buffers(self) -> list[torch.Tensor]:
        return [b for m in self.modules().values() for b in m.buffers()]

    def _count_flops(self, micro_batches: list[dict]) -> None:
        """FLOPs of one optimizer step: its `prepare_step` plus grad_accum times its last micro-step, counted on
        passes whose effects are then undone (the counter may decompose fused kernels, so the counted pass must
        not be the one that trains)."""
        saved = [b.clone() for b in self._buffers()]
        with FlopCounterMode(display=False) as once:
            self.prepare_step(micro_batches)
        with FlopCounterMode(display=False) as micro:  # the last micro-step: the one that syncs under DDP
            self.micro_step(micro_batches[-1], len(micro_batches) - 1, sync=True)
        if self.sharded_root is not None:  # the loss network is called outside the root's forward: gather it
            self.sharded_root.unshard()
        loss_networks = self.loss_network_flops() * self.grad_accum
        if self.sharded_root is not None:
            self.sharded_root.reshard()
        for b, s in zip(self._buffers(), saved):
            b.copy_(s)
        self._zero_grad()
        self.flops_per_step_device = float(once.get_total_flops() + micro.get_total_flops() * self.grad_accum)
        totals = torch.tensor([self.flops_per_step_device, loss_networks], dtype=torch.float64,
                              device=self.info.device)
        self.flops_per_step, self.loss_network_flops_per_step = vdist.all_reduce_sum(totals).tolist()

    def _zero_grad(self) -> None:
        for opt in self.optimizers().values():
            opt.zero_grad(set_to_none=True)

    def _train_step(self, batches: Iterator[dict]) -> dict[str, float] | None:
        tc, accum = self.cfg.train, self.grad_accum
        micro_batches = [next(batches) for _ in range(accum)]
        self.bad_samples += sum(int(b.get("skipped_samples", 0)) for b in micro_batches)
        self.before_step()
        if self.flops_per_step_device is None:
            self._count_flops(micro_batches)
        self._zero_grad()
        snapshot = [b.clone() for b in self._buffers()] if tc.nan_policy == "skip" else None
        self.prepare_step(micro_batches)
        totals: dict[str, torch.Tensor] = {}
        for micro, batch in enumerate(micro_batches):
            parts = self.micro_step(batch, micro, sync=micro == accum - 1)
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v.detach().float() / accum
        bad = first_non_finite(totals, self.info.device)
        if bad is not None:
            if tc.nan_policy == "stop":
                raise NonFiniteLoss(f"non-finite {bad} loss at {self.stage} step {self.step}; the last good "
                                    f"checkpoint in {self.ckpt_dir} is kept (train.nan_policy: skip skips such steps)")
            log.warning("non-finite %s loss at %s step %d: step skipped", bad, self.stage, self.step)
            for b, s in zip(self._buffers(), snapshot):  # e.g. the DINO centres the skipped step moved
                b.copy_(s)
            self._zero_grad()
            self.skipped += 1
            return None
        logs = self.update()
        names = sorted(totals)  # one collective for every logged term
        means = vdist.all_reduce_mean(torch.stack([totals[k] for k in names])).tolist()
        return {**dict(zip(names, means)), **logs}

    def _images(self, live: Live) -> None:
        if self.sharded_root is not None:  # the grids call encode/decode, not forward: gather the root first
            self.sharded_root.unshard()
        for name, path in self.save_images(self.step):
            live.log_image(name, path)
        self._imaged_step = self.step
        if self.sharded_root is not None:
            self.sharded_root.reshard()

    # -- the loop -------------------------------------------------------------------------------------------------
    def fit(self) -> dict:
        record = RunRecord(self.out, self.stage, to_dict(self.cfg), self.cfg.seed,
                           fingerprint=self.fingerprint) if self.info.is_main else None
        try:
            metrics = self._fit()
        except Interrupted as e:
            if record:
                record.finish(status="interrupted", error=str(e), step=self.step)
            raise
        except BaseException as e:
            if record:
                record.finish(status="failed", error=f"{type(e).__name__}: {e}", step=self.step)
            raise
        if record:
            record.finish(metrics=metrics)
        return metrics

    def _fit(self) -> dict:
        cfg, tc, info = self.cfg, self.cfg.train, self.info
        self._prepare_checkpoints()
        batches = stream(self.make_loader(), cfg.seed + self.data_seed_offset, self.step * self.grad_accum)
        live = Live(self.out / "dvclive", resume=self.step > 0, enabled=info.is_main)
        peak = device_peak(info.device, uses_bf16(info.device, tc.precision), tc.peak_tflops)
        meter, t_start = Meter(), time.perf_counter()
        log.info("%s %s: %d steps x %d images (%d ranks x %d micro x %d accum)%s", self.stage, cfg.name,
                 self.total_steps, self.batch_size, info.world_size, self.micro, self.grad_accum, self.describe())
        with GracefulStop() as stop:
            bar = progress(range(self.step, self.total_steps), total=self.total_steps, initial=self.step,
                           desc=f"{self.stage} {cfg.name}")
            for _ in bar:
                first = self.flops_per_step_device is None
                out = self._train_step(batches)
                if first:
                    meter = Meter()  # the first step also counted FLOPs: keep it out of the throughput
                self.step += 1
                self.samples += self.batch_size
                self.after_step()
                if out is not None:
                    meter.add(out, self.batch_size)
                if self.step % tc.log_every == 0 or self.step == self.total_steps:
                    means, ips, sec = meter.flush()
                    if means:
                        self.last = {**means, "images_per_s": ips,
                                     **utilisation(self.flops_per_step_device, sec, peak)}
                        live.log(self.step, self.last)
                        if hasattr(bar, "set_postfix"):
                            bar.set_postfix(loss=f"{means['loss']:.3f}", ips=f"{ips:.0f}", refresh=False)
                if self.step % tc.image_every == 0:
                    self._images(live)
                stopping = stop.requested(info.device)  # collective: every rank, every step
                if stopping or (self.step % tc.checkpoint_every == 0 and self.step < self.total_steps):
                    self.save()
                if stopping:
                    live.close()
                    raise Interrupted(f"{self.stage} stopped by signal at step {self.step}; checkpoint saved, "
                                      f"re-run the same command to resume")
        if self._imaged_step != self.step:  # the final grids, also when a finished run is resumed (DVC re-run)
            self._images(live)
        self.save()
        last = self.last
        model_flops = (self.flops_per_step or 0.0) - self.loss_network_flops_per_step
        metrics = {"config": cfg.name, "stage": self.stage, "step": self.step, "samples_seen": self.samples,
                   "skipped_steps": self.skipped,
                   "bad_samples_skipped": self.bad_samples, "wall_s": time.perf_counter() - t_start,
                   "world_size": info.world_size, "flops_per_step": self.flops_per_step,
                   "flops_per_step_device": self.flops_per_step_device,
                   "total_flops": (self.flops_per_step or 0.0) * self.total_steps,
                   "loss_network_flops_per_step": self.loss_network_flops_per_step,
                   "model_flops_per_step": model_flops, "model_total_flops": model_flops * self.total_steps,
                   "peak_flops_device": peak.flops,
                   "peak_source": peak.source, "flops_convention": FLOPS_CONVENTION, **last}
        self.export(metrics)
        if info.is_main:
            write_json_atomic(self.out / "metrics.json", metrics)
        live.close()
        log.info("%s %s done: %s", self.stage, cfg.name,
                 {k: round(v, 4) for k, v in last.items() if isinstance(v, float)})
        return metrics


def run_trainer(trainer_cls: type[Trainer], cfg: Config, resume: bool = True, loader: Loader | None = None) -> dict:
    """Start the process group (torchrun or single process), fit one stage's trainer, and always shut down."""
    info = vdist.init_distributed()
    try:
        return trainer_cls(cfg, info, resume, loader).fit()
    finally:
        vdist.shutdown()
