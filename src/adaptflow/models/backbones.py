"""The one timm-based backbone builder that transfer, DA and seq share, and what they do with it.

Blocks, heads and layer-wise learning rates all come from timm's own grouping
(`model.group_matcher`, `timm.models.group_parameters`, `timm.optim.param_groups_layer_decay`),
so a new timm family works here without a table of its parameter names.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import socket
import threading
from collections import defaultdict
from pathlib import Path
from typing import Literal

import numpy as np
import timm
import torch
from timm.models import group_parameters
from timm.optim import param_groups_layer_decay
from torch import nn

HUB_HOST = ("huggingface.co", 443)
PROBE_TIMEOUT = 3.0
FIX_HINT = (
    "use source.pretrained: source (the backbone trained here on rendered characters) or a path "
    "to a checkpoint (.pt state_dict)"
)


class HubUnavailableError(RuntimeError):
    """timm hub weights were asked for but can be neither downloaded nor found in the cache."""


class CheckpointFileError(ValueError):
    """A weights file is missing, unreadable, or belongs to another architecture."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_reachable(timeout: float = PROBE_TIMEOUT) -> bool:
    """One TCP connect to the hub; a thread bounds the DNS look-up too (it ignores the timeout)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(HUB_HOST, timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


@contextlib.contextmanager
def _hf_offline():
    """huggingface_hub reads HF_HUB_OFFLINE once at import: flip its flag for this load only."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _hub_safe_kwargs(arch: str, kwargs: dict) -> None:
    """Hub weights fit only timm's own shapes: timm resamples img_size/patch_size, nothing else."""
    shaping = [k for k in kwargs if k not in ("img_size", "patch_size") and not _is_drop_rate(k)]
    if shaping:
        raise ValueError(
            f"hub weights for {arch!r} cannot be loaded with backbone kwargs {sorted(shaping)}: "
            "they change weight shapes; with hub weights only img_size, patch_size and *drop*_rate "
            f"may be set (drop the others), or {FIX_HINT}"
        )


def _is_drop_rate(key: str) -> bool:
    return "drop" in key and key.endswith("_rate")


def _create(arch: str, pretrained: bool, **kwargs) -> nn.Module:
    try:
        return timm.create_model(arch, pretrained=pretrained, **kwargs)
    except TypeError as e:  # a kwarg the architecture does not take
        raise ValueError(f"backbone {arch!r} does not accept these kwargs: {e}") from None


def _create_from_hub(arch: str, **kwargs) -> nn.Module:
    why = None
    if _truthy(os.environ.get("HF_HUB_OFFLINE")):
        why = "HF_HUB_OFFLINE is set"
    elif not _hub_reachable():
        why = f"{HUB_HOST[0]} unreachable"
    if why is None:
        return _create(arch, True, **kwargs)
    try:  # offline: the local HF cache may still hold the weights
        with _hf_offline():
            return _create(arch, True, **kwargs)
    except ValueError:  # a kwarg the architecture does not take: not a hub problem
        raise
    except Exception as e:
        raise HubUnavailableError(
            f"timm hub weights for {arch!r} need internet ({why}) and are not in the local "
            f"cache; {FIX_HINT}"
        ) from e


def build_backbone(
    arch: str,
    num_classes: int,
    *,
    in_chans: int = 1,
    kwargs: dict | None = None,
    small_input: bool = True,
    hub: bool = False,
) -> nn.Module:
    """A timm classifier `arch` with `num_classes` outputs for `in_chans`-channel images.

    `small_input`: a ResNet-family stem keeps its stride-2 conv but loses its max-pool, so 28x28
    inputs give 14-14-7-4-2 feature maps instead of 7-7-4-2-1 (a ViT takes img_size/patch_size
    in `kwargs` instead). `hub`: timm's pretrained weights; fails fast offline when they are not
    in the local cache (HubUnavailableError).
    """
    kwargs = dict(kwargs or {})
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5)
        raise ValueError(f"unknown timm backbone {arch!r}; similar names: {close or 'none'}")
    create_kwargs = {"num_classes": num_classes, "in_chans": in_chans, **kwargs}
    if hub:
        _hub_safe_kwargs(arch, kwargs)
        model = _create_from_hub(arch, **create_kwargs)
    else:
        model = _create(arch, False, **create_kwargs)
    if small_input and isinstance(getattr(model, "maxpool", None), nn.Module):
        model.maxpool = nn.Identity()
    return model


def _arch(model: nn.Module) -> str:
    return getattr(model, "pretrained_cfg", {}).get("architecture") or type(model).__name__


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    clf = getattr(model, "pretrained_cfg", {}).get("classifier")
    if clf:
        return (clf,) if isinstance(clf, str) else tuple(clf)
    head = model.get_classifier()
    return tuple(name for name, m in model.named_modules() if m is head and name)


def _in(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _state_dict_of(obj, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        raise CheckpointFileError(
            f"checkpoint {path} holds no state_dict (expected a dict of tensors, or one under "
            "'state_dict' or 'model')"
        )
    return obj


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state_dict into `model`; a classifier of another class count is skipped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointFileError(
            f"checkpoint {path} not found; give the path of a .pt state_dict, or {FIX_HINT}"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, garbage, a pickle with code...
        raise CheckpointFileError(
            f"checkpoint {path} is not a readable torch checkpoint: {type(e).__name__}: "
            f"{str(e).split('. ')[0][:200]} (a state_dict saved with torch.save is expected)"
        ) from None
    state = _state_dict_of(obj, path)
    own = model.state_dict()
    for prefix in ("module.", "model."):  # DDP / an adaptflow method wrapping the net as .model
        if not any(k in own for k in state) and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    head = _classifier_prefixes(model)
    state = {
        k: v
        for k, v in state.items()
        if not (_in(k, head) and (k not in own or _shape(v) != _shape(own[k])))
    }
    offending = [
        f"{k} missing {_shape(own[k])}" for k in own if k not in state and not _in(k, head)
    ]
    offending += [f"{k} unexpected {_shape(v)}" for k, v in state.items() if k not in own]
    offending += [
        f"{k} {_shape(v)} vs model {_shape(own[k])}"
        for k, v in state.items()
        if k in own and _shape(v) != _shape(own[k])
    ]
    if offending:
        raise CheckpointFileError(
            f"checkpoint {path} does not fit backbone {_arch(model)!r} ({len(offending)} "
            f"offending keys, e.g. {'; '.join(offending[:3])}): it was saved from another "
            "architecture or other backbone kwargs; build the backbone with the arch and kwargs "
            "of the run that saved it, or point source.pretrained to a checkpoint of this one"
        )
    model.load_state_dict(state, strict=False)


def _layout(model: nn.Module) -> tuple[list[str], list[list[str]], list[str]]:
    """(stem, blocks, head) parameter names from timm's coarse grouping, in forward order.

    timm puts the stem first and unmatched parameters (the head, a ViT's fc_norm) last; a final
    norm it matches with MATCH_PREV_GROUP (the ViT's `norm`) joins the last block.
    """
    matcher = model.group_matcher(coarse=True)
    layer_of = group_parameters(model, matcher, reverse=True)
    by_id: dict[int, list[str]] = defaultdict(list)
    for name, _ in model.named_parameters():
        by_id[layer_of[name]].append(name)
    groups = [by_id[i] for i in sorted(by_id)]
    stem = groups.pop(0) if "stem" in matcher and groups else []
    clf = _classifier_prefixes(model)
    head = groups.pop() if groups and any(_in(n, clf) for n in groups[-1]) else []
    return stem, groups, head


def _outermost_modules(model: nn.Module, names: set[str]) -> list[str]:
    """The largest modules whose parameters all belong to `names`, in module order."""
    out: list[str] = []
    for mod_name, module in model.named_modules():
        if not mod_name or any(mod_name.startswith(o + ".") for o in out):
            continue
        params = {f"{mod_name}.{p}" for p, _ in module.named_parameters()}
        if params and params <= names:
            out.append(mod_name)
    return out


def block_names(model: nn.Module) -> list[str]:
    """The blocks unfreezing counts, first to last (ResNet: layer1..layer4; ViT: blocks.0..)."""
    return [_outermost_modules(model, set(b))[0] for b in _layout(model)[1]]


def set_trainable(model: nn.Module, unfreeze: int | Literal["all"]) -> list[str]:
    """Train the head and the last `unfreeze` blocks (0 = head only, "all" = every parameter).

    Returns the names of the trainable parameters.
    """
    _, blocks, head = _layout(model)
    if unfreeze == "all":
        trainable = {n for n, _ in model.named_parameters()}
    elif isinstance(unfreeze, int) and not isinstance(unfreeze, bool) and unfreeze >= 0:
        if unfreeze > len(blocks):
            raise ValueError(
                f"unfreeze={unfreeze} but backbone {_arch(model)!r} has {len(blocks)} blocks "
                f"({', '.join(block_names(model))}); use 0..{len(blocks)} or 'all'"
            )
        trainable = set(head).union(*blocks[len(blocks) - unfreeze :])
    else:
        raise ValueError(f"unfreeze must be a block count >= 0 or 'all', got {unfreeze!r}")
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def train_mode(model: nn.Module) -> nn.Module:
    """Train mode, except the frozen parts (set_trainable), which stay in eval: frozen BatchNorm
    running stats never move, frozen Dropout is off.

    Frozen: a module whose parameters are all frozen, or a parameter-free one (a ViT's pos_drop)
    with only frozen parameters before it (timm registers modules in forward order).
    """
    model.train()
    upstream_trainable = any(p.requires_grad for p in model.parameters(recurse=False))
    for name, module in model.named_modules():
        if not name:
            continue
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()
        elif not params and not upstream_trainable:
            module.eval()
        upstream_trainable |= any(p.requires_grad for p in module.parameters(recurse=False))
    return model


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, layer_decay: float
) -> list[dict]:
    """timm's layer-wise lr decay over the trainable parameters, each group's lr set.

    The head gets `lr`, the block below it lr*layer_decay, the next lr*layer_decay**2 ... and the
    stem the lowest (BEiT; timm's fine grouping: one step per residual block / ViT block). Each
    group keeps its `lr_scale`, so timm's schedulers (which multiply by it) stay consistent.
    """
    no_decay = getattr(model, "no_weight_decay", lambda: ())()
    groups = param_groups_layer_decay(
        model,
        weight_decay=weight_decay,
        no_weight_decay_list=tuple(no_decay),
        layer_decay=layer_decay,
    )
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    return groups


def feature_dim(model: nn.Module) -> int:
    """Width of `embed`'s features: timm's pre-logits size (= num_features for ResNet/ViT)."""
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


@torch.no_grad()
def embed(model: nn.Module, x: np.ndarray, device, batch_size: int = 512) -> np.ndarray:
    """Frozen pre-logits features (N, feature_dim) float32 of images x (N, C, H, W)."""
    model.eval().to(device)
    out = []
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).to(device)
        f = model.forward_head(model.forward_features(xb), pre_logits=True)
        out.append(f.float().cpu())
    if not out:
        return np.zeros((0, feature_dim(model)), np.float32)
    return torch.cat(out).numpy()
