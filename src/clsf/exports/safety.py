"""What an export may compute before clsf runs it: pure tensor math, checked op by op.

Loading an export folder (`clsf predict EXPORT ...`) runs a graph someone else may have written. A
SavedModel can hold file, process or Python-function ops; a TorchScript archive can hold methods
that run on load (`__setstate__`); an ONNX file can name custom-op domains. Before a file is loaded
its graph is read as data and every operation it can run is checked against the allow-lists below
(the operations clsf's own exports use, for every model the spec can describe, and their kin);
anything else is refused in one line naming the operation. The `.keras` format is loaded with Keras'
`safe_mode`, which refuses Python code (Lambda layers) itself.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from clsf.errors import UserError

MATH = ("Add Sub Mul Div Neg Abs Exp Log Sqrt Pow Reciprocal Max Min Relu LeakyRelu Elu Selu Sigmoid Tanh "
        "Softmax LogSoftmax Softplus Gelu Erf Clip Where Equal Greater Less Cast Identity Constant").split()
ONNX_OPS = set(MATH) | set(("Conv Gemm MatMul BatchNormalization MaxPool AveragePool GlobalAveragePool GlobalMaxPool "
                            "ReduceMean ReduceMax ReduceSum Reshape Flatten Transpose Squeeze Unsqueeze Concat Slice "
                            "Gather Shape Pad Dropout Expand Tile Range ConstantOfShape HardSigmoid HardSwish").split())
ONNX_DOMAINS = ("", "ai.onnx")

TORCH_OPS = set(("_convolution conv2d add sub mul div rsub neg abs exp log sqrt rsqrt pow amax amin max min mean sum "
                 "batch_norm dropout feature_dropout flatten floor_divide linear matmul addmm t max_pool2d avg_pool2d "
                 "adaptive_avg_pool2d adaptive_max_pool2d pad constant_pad_nd permute relu leaky_relu elu selu gelu "
                 "silu sigmoid tanh softmax log_softmax hardtanh clamp size view reshape contiguous cat stack "
                 "transpose select slice unsqueeze squeeze to detach dim len Int Float ScalarImplicit eq where "
                 "expand NumToTensor Constant GetAttr ListConstruct ListUnpack TupleConstruct TupleUnpack "
                 "__getitem__").split())
TORCH_NAMESPACES = ("aten", "prim")

TF_SERVE_OPS = set(("Const Identity IdentityN NoOp Placeholder ReadVariableOp VarHandleOp StatefulPartitionedCall "
                    "PartitionedCall AddV2 Add Sub Mul RealDiv Div Neg Abs Exp Log Sqrt Rsqrt Square Pow Reciprocal "
                    "Maximum Minimum Max Min Mean Sum Prod BiasAdd Conv2D DepthwiseConv2dNative MatMul BatchMatMulV2 "
                    "Relu Relu6 LeakyRelu Elu Selu Sigmoid Tanh Softmax LogSoftmax Softplus Erf MaxPool AvgPool "
                    "FusedBatchNormV3 Reshape Squeeze ExpandDims Transpose Pack Unpack ConcatV2 StridedSlice Slice Shape "
                    "Cast Pad PadV2 Select SelectV2 Fill Range Tile GatherV2 Equal Greater Less ZerosLike OnesLike "
                    "StopGradient SquaredDifference Erfc").split())
# what a SavedModel's own saver functions use: allowed there, never in what serving or loading runs
TF_SAVER_OPS = set(("SaveV2 RestoreV2 MergeV2Checkpoints ShardedFilename StringJoin StaticRegexFullMatch "
                    "AssignVariableOp VarIsInitializedOp DisableCopyOnRead").split())


def _refuse(path: Path, what: str) -> UserError:
    return UserError(f"{path} holds {what}, which is not pure tensor math, so clsf will not run it; use an "
                     "export clsf wrote (clsf export RUN --format ...).")


def check_onnx(path: Path) -> None:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any parse failure: not an ONNX file we can vouch for
        raise UserError(f"{path} is not an ONNX model clsf can read ({type(e).__name__}); export the run again.") from None
    local = {(f.domain, f.name): f for f in model.functions}

    def nodes(graph_nodes):
        for n in graph_nodes:
            yield n
            for a in n.attribute:
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    yield from nodes(g.node)

    for n in nodes(model.graph.node):
        if (n.domain, n.op_type) in local:
            continue  # a local function: its body is checked below
        if n.domain not in ONNX_DOMAINS or n.op_type not in ONNX_OPS:
            raise _refuse(path, f"the operation {n.domain + '.' if n.domain else ''}{n.op_type}")
    for f in model.functions:
        for n in nodes(f.node):
            if (n.domain, n.op_type) not in local and (n.domain not in ONNX_DOMAINS or n.op_type not in ONNX_OPS):
                raise _refuse(path, f"the operation {n.domain + '.' if n.domain else ''}{n.op_type}")


def check_torchscript(path: Path) -> None:
    """Before loading: the archive's TorchScript source holds only `forward` methods (no
    `__setstate__`, which would run on load) calling allowed aten/prim operations."""
    try:
        with zipfile.ZipFile(path) as z:
            code = {n: z.read(n).decode("utf-8", "replace") for n in z.namelist() if "/code/" in f"/{n}" and n.endswith(".py")}
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{path} is not a TorchScript archive ({e}); export the run again.") from None
    if not code:
        raise UserError(f"{path} holds no TorchScript code; export the run again.")
    for name, text in code.items():
        for method in re.findall(r"^\s*def\s+(\w+)\s*\(", text, re.M):
            if method != "forward":
                raise _refuse(path, f"a method {method} (in {name})")
        for call in re.findall(r"\b(torch(?:\.\w+)+|ops\.\w+\.\w+)\s*\(", text):
            parts = call.split(".")
            via_ops = parts[0] == "ops"  # ops.NS.OP(...), else torch.OP(...) for aten::OP
            ns, op = (parts[1], parts[2]) if via_ops else ("aten", parts[-1])
            if (not via_ops and len(parts) > 2) or ns not in TORCH_NAMESPACES or op not in TORCH_OPS:
                raise _refuse(path, f"the operation {call}")


def check_torchscript_graph(path: Path, module) -> None:
    """After loading (nothing has run yet but the checked source): the inlined forward graph."""
    import torch

    graph = module.forward.graph.copy()
    torch._C._jit_pass_inline(graph)
    stack = list(graph.nodes())
    while stack:
        node = stack.pop()
        ns, _, op = node.kind().partition("::")
        if ns not in TORCH_NAMESPACES or op not in TORCH_OPS:
            raise _refuse(path, f"the operation {node.kind()}")
        for block in node.blocks():
            stack += list(block.nodes())


def check_savedmodel(folder: Path) -> None:
    """Before loading: every op that serving or loading can run (the signatures' functions and the
    init op, followed through every function they call) is pure tensor math; the rest of the graph
    (the saver's own functions) may also hold the saver's ops."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb = folder / "saved_model.pb"
    sm = saved_model_pb2.SavedModel()
    try:
        sm.ParseFromString(pb.read_bytes())
        graph = sm.meta_graphs[0].graph_def
    except Exception as e:  # noqa: BLE001 - a damaged or foreign file
        raise UserError(f"{pb} is not a SavedModel clsf can read ({type(e).__name__}); export the run again.") from None
    meta = sm.meta_graphs[0]
    functions = {f.signature.name: f for f in graph.library.function}
    top = {n.name: n for n in graph.node}
    starts = [t.name.split(":")[0] for sig in meta.signature_def.values() for t in sig.outputs.values()]
    run_ops, seen_nodes, seen_fns = set(), set(), set()

    def called(node):
        for attr in node.attr.values():
            names = [attr.func.name] if attr.HasField("func") else [f.name for f in attr.list.func]
            yield from (n for n in names if n)

    def visit_fn(name):
        if name in seen_fns or name not in functions:
            return
        seen_fns.add(name)
        for n in functions[name].node_def:
            run_ops.add(n.op)
            for f in called(n):
                visit_fn(f)

    stack = [s.lstrip("^") for s in starts]
    while stack:
        name = stack.pop()
        if name in seen_nodes or name not in top:
            continue
        seen_nodes.add(name)
        node = top[name]
        run_ops.add(node.op)
        for f in called(node):
            visit_fn(f)
        stack += [i.split(":")[0].lstrip("^") for i in node.input]
    for op in sorted(run_ops):
        if op not in TF_SERVE_OPS:
            raise _refuse(folder, f"the operation {op}")
    rest = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    for op in sorted(rest):
        if op not in TF_SERVE_OPS | TF_SAVER_OPS:
            raise _refuse(folder, f"the operation {op}")
