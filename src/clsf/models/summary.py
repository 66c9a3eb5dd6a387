"""Layer tables measured from a built model (output shapes and parameter counts come from the
framework, not from the spec), in one format for both frameworks, and a drawn diagram."""

from __future__ import annotations

from pathlib import Path

from clsf.models.spec import COMPOSITES, ModelSpec, Residual, parts, walk

JOIN = {"Residual": "_add", "SqueezeExcite": "_excite"}  # the Keras layer that ends a composite block

# Parameter counts include batch-norm moving statistics in both frameworks (Keras counts them as
# non-trainable parameters; torch keeps them as buffers).


def _rows_keras(spec: ModelSpec):
    from clsf.frameworks import import_tf
    from clsf.models.keras import build_keras

    import_tf()

    model = build_keras(spec)
    rows, leaves = [], dict(walk(spec.layers))
    for layer in spec.layers:
        names = [n for n, _ in walk([layer])] if isinstance(layer, COMPOSITES) else [layer.name]
        for name in names:
            kl = model.get_layer(name)
            leaf = leaves[name]
            trainable = sum(int(w.numpy().size) for w in kl.trainable_weights)
            total = kl.count_params()
            rows.append((name, type(leaf).__name__, tuple(kl.output.shape[1:]), total, trainable))
        if isinstance(layer, COMPOSITES):
            kind = type(layer).__name__
            rows.append((layer.name, kind, tuple(model.get_layer(layer.name + JOIN[kind]).output.shape[1:]), 0, 0))
    return rows


def _rows_torch(spec: ModelSpec):
    import torch

    from clsf.models.torch import build_torch

    net = build_torch(spec).eval()
    shapes = {}
    hooks = []
    leaves = dict(walk(spec.layers))
    for name in leaves:
        hooks.append(net.leaf(name).register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:]))))
    for layer in spec.layers:
        if isinstance(layer, COMPOSITES):
            hooks.append(net._modules[layer.name].register_forward_hook(
                lambda m, i, o, name=layer.name: shapes.__setitem__(name, tuple(o.shape[1:]))))
    concrete = tuple(32 if d is None else d for d in spec.input_shape)
    x = torch.zeros((1,) + (concrete if len(concrete) == 1 else (concrete[2], concrete[0], concrete[1])))
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()

    def nhwc(shape):  # show torch's NCHW outputs in the spec's NHWC terms
        s = shape if len(shape) != 3 else (shape[1], shape[2], shape[0])
        if spec.input_shape and None in spec.input_shape and len(s) == 3:
            s = (None, None, s[2])
        return s

    rows = []
    for layer in spec.layers:
        names = [n for n, _ in walk([layer])] if isinstance(layer, COMPOSITES) else [layer.name]
        for name in names:
            m = net.leaf(name)
            trainable = sum(p.numel() for p in m.parameters())
            buffers = sum(b.numel() for k, b in m.named_buffers() if not k.endswith("num_batches_tracked"))
            rows.append((name, type(leaves[name]).__name__, nhwc(shapes[name]), trainable + buffers, trainable))
        if isinstance(layer, COMPOSITES):
            rows.append((layer.name, type(layer).__name__, nhwc(shapes[layer.name]), 0, 0))
    return rows


def summary_rows(spec: ModelSpec, framework: str):
    """(name, type, output shape, params, trainable params) per layer, as `framework` builds it;
    the framework imported here, or refused in one line naming its extra."""
    from clsf.frameworks import import_tf, require

    if framework == "keras":
        import_tf()
        return _rows_keras(spec)
    require("torch")
    return _rows_torch(spec)


def format_summary(spec: ModelSpec, framework: str) -> str:
    """A layer table (name, type, output shape, parameters) of `spec` as `framework` ("keras" or
    "torch") builds it, with the total: what `clsf models summary` prints."""
    rows = summary_rows(spec, framework)
    shape = lambda s: "(" + ", ".join("None" if d is None else str(d) for d in s) + ")"
    table = [("layer", "type", "output shape", "params")] + [(n, t, shape(s), f"{p:,}") for n, t, s, p, _ in rows]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    line = "-" * (sum(widths) + 6)
    out = [f'model "{spec.name}" ({framework}), input {shape(spec.input_shape)}, init {spec.init}', line]
    for i, r in enumerate(table):
        out.append(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>{widths[3]}}")
        if i == 0:
            out.append(line)
    total, trainable = sum(r[3] for r in rows), sum(r[4] for r in rows)
    out += [line, f"total params: {total:,}", f"trainable params: {trainable:,}",
            f"non-trainable params: {total - trainable:,}"]
    return "\n".join(out)


def draw_diagram(spec: ModelSpec, out: Path) -> Path:
    """Boxes top to bottom, one per layer (residual blocks show their inner layers and the skip),
    drawn with matplotlib, so no graphviz/pydot is needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    from clsf.models.spec import infer_shapes

    items = [("input", f"input {spec.input_shape}", [], False)]
    for layer, _, out_shape in infer_shapes(spec):
        if isinstance(layer, COMPOSITES):
            inner = [f"{n}: {type(l).__name__}" for n, l in walk(parts(layer, ())[0][0])]
            skip = [f"skip: {', '.join(type(l).__name__ for _, l in walk(layer.shortcut)) or 'identity'}"] \
                if isinstance(layer, Residual) else []
            items.append((layer.name, f"{layer.name}: {type(layer).__name__} -> {out_shape}", inner + skip, True))
        else:
            extra = getattr(layer, "activation", None)
            label = f"{layer.name}: {type(layer).__name__}" + (f" ({extra})" if extra and extra != "linear" else "")
            items.append((layer.name, f"{label} -> {out_shape}", [], False))
    heights = [0.5 + 0.22 * len(inner) for _, _, inner, _ in items]
    gap = 0.35
    total = sum(heights) + gap * (len(items) - 1)
    fig, ax = plt.subplots(figsize=(6.0, max(2.0, total * 0.62)))
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.1, total + 0.1)
    ax.axis("off")
    y = total
    centers = []
    for (_, label, inner, is_block), h in zip(items, heights):
        top = y
        box = FancyBboxPatch((1.5, top - h), 7, h, boxstyle="round,pad=0.02",
                             fc="#e8f0fe" if not is_block else "#fdf2e0", ec="#333333", lw=1)
        ax.add_patch(box)
        ax.text(5, top - 0.25, label, ha="center", va="center", fontsize=8, family="monospace")
        for i, t in enumerate(inner):
            ax.text(5, top - 0.5 - 0.22 * i, t, ha="center", va="center", fontsize=7, family="monospace", color="#444444")
        if is_block:
            ax.add_patch(FancyArrowPatch((8.5, top - 0.1), (8.5, top - h + 0.1), connectionstyle="arc3,rad=-0.6",
                                         arrowstyle="->", mutation_scale=8, color="#aa5500"))
        centers.append((top, top - h))
        y = top - h - gap
    for (_, bottom), (nxt_top, _) in zip(centers, centers[1:]):
        ax.add_patch(FancyArrowPatch((5, bottom), (5, nxt_top), arrowstyle="->", mutation_scale=10))
    ax.set_title(f"{spec.name}", fontsize=10)
    fig.tight_layout()
    from clsf.plots import save_figure

    return save_figure(fig, Path(out), dpi=110)
