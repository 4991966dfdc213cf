"""A deterministic text form of the IR (golden files, ``attndsl ir``)."""

from __future__ import annotations

from ..features.block_base import format_node
from ..features.registry import block_feature_of
from ..features.text import format_leaf, format_mask
from .nodes import Model


def _num(v: float) -> str:
    return repr(float(v))


def print_ir(model: Model) -> str:
    """The IR as text: what ``attndsl ir`` prints and the golden files hold."""
    lines = [f"model {model.name} (attndsl {model.version}, {model.dtype}, seed {model.seed})"]
    if model.weights_file:
        lines.append(f"  weights {model.weights_file}")
    for d in model.dims:
        lines.append(f"  dim {d.name} = {'dynamic' if d.size is None else d.size}")
    for i in model.inputs:
        lines.append(f"  input {i.name}: {i.dtype}[{', '.join(map(str, i.shape))}]")
    for b in model.blocks:
        kv = b.key if b.key == b.value else f"key={b.key}, value={b.value}"
        lines.append(f"  block {b.name} = attention(query={b.query}, "
                     f"{'key_value=' if b.key == b.value else ''}{kv})"
                     f"{' [core]' if not b.project else ''}")
        lines.append(f"    heads {b.heads}, kv_heads {b.kv_heads}, head_dim {b.head_dim}, "
                     f"v_head_dim {b.v_head_dim}")
        lines.append(f"    width_q {b.width_q}, width_kv {b.width_kv}, out_dim {b.out_dim}, "
                     f"bias {str(b.bias).lower()}")
        lines.append(f"    scale {_num(b.scale)}")
        where = "self (q = past_len + i)" if b.self_attention else "cross (q = i)"
        lines.append(f"    positions {where}")
        lines.append(f"    mask {format_mask(b.mask)}")
        if b.score:
            lines.append(f"    score {', '.join(format_leaf(s) for s in b.score)}")
        for f in b.features:
            feature = block_feature_of(f)
            lines.append(f"    {format_node(feature.key, feature.format(f))}")
        if b.static_cache:
            lines.append(f"    cache layout=static, max_len={b.cache_max_len}")
        elif b.cache:
            lines.append("    cache")
        if b.fused_qkv:
            lines.append("    fused qkv projection")
    for o in model.outputs:
        lines.append(f"  output {o.name} = {o.stream}{'.' + o.attr if o.attr else ''}")
    return "\n".join(lines) + "\n"
