"""Turning a model into a trainable one for the run at hand: freezing what no objective uses, activation
checkpointing, torch.compile of the blocks, DDP or FSDP2. Shared by every training stage."""
from __future__ import annotations

import re

from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from vtp import dist as vdist
from vtp.config import Config, LossConfig

BLOCK_NAME = re.compile(r"(^|\.)blocks\.\d+$")
RECOMPILE_LIMIT = 64  # graphs per block code object (compile_blocks)


def freeze(*modules: nn.Module | nn.Parameter | None) -> None:
    for m in modules:
        if isinstance(m, nn.Parameter):
            m.requires_grad_(False)
        elif m is not None:
            m.requires_grad_(False)


def freeze_unused(tok: nn.Module, loss: LossConfig) -> None:
    """Parameters no enabled objective reaches get no gradient: DDP then needs no find_unused_parameters, and
    AdamW's weight decay does not silently shrink them."""
    if not loss.clip:
        freeze(tok.text, tok.clip_proj, tok.logit_scale)
    if not loss.ssl:
        freeze(tok.dino_head, getattr(tok.encoder, "mask_token", None))
    if not loss.rec:
        freeze(tok.decoder)
        if tok.bottleneck_ae_only:
            freeze(tok.bottleneck)


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    return [m for name, m in model.named_modules() if BLOCK_NAME.search(name)]


def apply_fsdp(model: nn.Module, forward_only: bool = False) -> nn.Module:
    """FSDP2: one unit per transformer block plus the root. A forward-only model (the EMA teacher) must also
    reshard its root after forward, or the EMA update would meet unsharded root parameters."""
    from torch.distributed.fsdp import fully_shard

    for block in transformer_blocks(model):
        fully_shard(block)
    fully_shard(model, reshard_after_forward=True if forward_only else None)
    return model


def compile_blocks(model: nn.Module) -> int:
    """torch.compile each transformer block in place (`nn.Module.compile`): parameter names, checkpoints, the EMA
    pairing and FSDP units stay as they are, and the step's data-dependent Python (views, masks, subsets) stays
    eager instead of breaking one whole-model graph. Blocks of one shape share a compiled graph (dynamo inlines
    modules and treats their parameters as inputs). Returns how many blocks were compiled.

    One code object (`Block.forward`) serves the encoder, the decoder and the EMA teacher, with and without
    grad, prefix or not, global and local crops: a 3-step tiny run already makes the 8 graphs of dynamo's default
    recompile limit, past which it runs every new variant eagerly after one logged warning. The limit is raised
    to RECOMPILE_LIMIT."""
    import torch._dynamo

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    blocks = transformer_blocks(model)
    for block in blocks:
        block.compile()
    return len(blocks)


def wrap_model(model: nn.Module, cfg: Config, info: vdist.DistInfo, grad_checkpointing: bool | None = None
               ) -> nn.Module:
    """Activation checkpointing (default: `model.grad_checkpointing`), then the blocks compiled
    (`train.compile`), then FSDP2 or DDP (torchtitan's order: compile per block, then shard)."""
    if cfg.model.grad_checkpointing if grad_checkpointing is None else grad_checkpointing:
        # timm's convention: a model recomputes its own blocks (parameter names unchanged)
        owner = next((m for m in model.modules() if hasattr(m, "set_grad_checkpointing")), None)
        if owner is None:
            raise ValueError(f"grad_checkpointing: {type(model).__name__} has no set_grad_checkpointing()")
        owner.set_grad_checkpointing(True)
    if cfg.train.compile and not compile_blocks(model):
        raise ValueError(f"train.compile: {type(model).__name__} has no transformer blocks (blocks.N) to compile")
    if cfg.train.fsdp and info.distributed:
        model = apply_fsdp(model)
    elif info.distributed:
        ids = [info.device.index] if info.device.type == "cuda" else None
        model = DDP(model, device_ids=ids, broadcast_buffers=False)
    return model


def export_tokenizer(objective: nn.Module, sharded: bool) -> nn.Module | None:
    """The objective's tokenizer with full, unsharded weights for `save_pretrained` (a collective under FSDP;
    ranks other than 0 get None)."""
    tok = objective.tok
    if not sharded:
        return tok
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from vtp.models.tokenizer import Tokenizer

    full = get_model_state_dict(objective, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not full:  # with cpu_offload only rank 0 receives the gathered tensors
        return None
    plain = Tokenizer.from_spec(tok.spec, bottleneck_ae_only=tok.bottleneck_ae_only, clip_feature=tok.clip_feature)
    plain.load_state_dict({k.removeprefix("tok."): v for k, v in full.items() if k.startswith("tok.")})
    return plain
