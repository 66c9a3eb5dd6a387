"""What an export may compute before clsf runs it: pure tensor math, checked op by op.

Loading an export folder (`clsf predict EXPORT ...`) runs a graph someone else may have written. A
SavedModel can hold file, process or Python-function ops; a TorchScript archive can hold methods
that run on load (`__setstate__`); an ONNX file can name custom-op domains. Before a file is loaded
its graph is read as data and every operation it can run is checked against the allow-lists below
(the operations clsf's own exports use, for every model the spec can describe, and their kin);
anything else is refused in one line naming the operation. What is checked is what the loader reads:
the same bytes (ONNX, TorchScript), read by the loader's own archive reader (TorchScript), and every
function loading or serving can reach (SavedModel). A `.keras` file's archive and config are checked
(Keras' own classes only, no file links) and it is then loaded with Keras' `safe_mode`, which refuses
Python code (Lambda layers) itself.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from clsf.errors import UserError
from clsf.frameworks import import_tf

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


def _tensors(graph):
    """Every TensorProto a graph holds (initializers, constant attributes), subgraphs included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for n in graph.node:
        for a in n.attribute:
            yield from ([a.t] if a.HasField("t") else []) + list(a.tensors)
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _tensors(g)


def check_onnx(path: Path, raw: bytes) -> None:
    """`raw` is what onnxruntime will be given (the same bytes, not the path again): every node, in
    the graph, its subgraphs and local functions, is an allowed operation of the standard domain, and
    no tensor points to data outside the file (external data would make the runtime read other files)."""
    import onnx

    try:
        model = onnx.load_model_from_string(raw)
    except Exception as e:  # noqa: BLE001 - any parse failure: not an ONNX file we can vouch for
        raise UserError(f"{path} is not an ONNX model clsf can read ({type(e).__name__}); export the run again.") from None
    local = {(f.domain, f.name): f for f in model.functions}

    def nodes(graph_nodes):
        for n in graph_nodes:
            yield n
            for a in n.attribute:
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    yield from nodes(g.node)

    for n in list(nodes(model.graph.node)) + [n for f in model.functions for n in nodes(f.node)]:
        if (n.domain, n.op_type) in local:
            continue  # a local function: its body is checked too
        if n.domain not in ONNX_DOMAINS or n.op_type not in ONNX_OPS:
            raise _refuse(path, f"the operation {n.domain + '.' if n.domain else ''}{n.op_type}")
    if any(t.data_location == onnx.TensorProto.EXTERNAL or t.external_data for t in _tensors(model.graph)):
        raise _refuse(path, "a tensor stored in another file (external data)")


# A TorchScript archive's records (below its one top folder), as torch.jit.save writes them
TORCH_RECORDS = re.compile(r"(data\.pkl|constants\.pkl|version|byteorder|traced_inputs\.pkl|\.data/version|"
                           r"\.data/serialization_id|(data|constants|traced_inputs)/\d+|"
                           r"code/[\w/.]+\.py(\.debug_pkl)?|extra/[\w.-]+)")


def check_torchscript(path: Path, raw: bytes) -> None:
    """Before loading `raw` (the bytes torch.jit.load will be given): the archive is read through
    torch's own reader (what the loader reads, not what Python's zipfile makes of it: the two take
    different copies of a duplicated name), holds each name once and only the records torch.jit.save
    writes, and its TorchScript source holds only `forward` methods (no `__setstate__`, which would run
    on load) calling allowed aten/prim operations."""
    import io

    import torch

    try:
        listed = [i.filename for i in zipfile.ZipFile(io.BytesIO(raw)).infolist()]
        reader = torch._C.PyTorchFileReader(io.BytesIO(raw))  # the reader torch.jit.load uses
        records = reader.get_all_records()
    except (zipfile.BadZipFile, OSError, RuntimeError, ValueError) as e:
        raise UserError(f"{path} is not a TorchScript archive ({str(e).splitlines()[0][:120]}); export the run "
                        "again.") from None
    for names in (listed, records):
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise _refuse(path, f"the name {twice[0]} twice (a reader would see one copy, torch the other)")
    if len(listed) != len(records):
        raise _refuse(path, "entries that Python's zip reader and torch's list differently")
    odd = next((n for n in records if not TORCH_RECORDS.fullmatch(n)), None)
    if odd is not None:
        raise _refuse(path, f"a record {odd} that torch.jit.save does not write")
    code = {n: bytes(reader.get_record(n)).decode("utf-8", "replace") for n in records if n.endswith(".py")}
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
    """Before loading: every function that loading or serving can run is pure tensor math.

    Checked strictly (TF_SERVE_OPS): every function of the library but those only the saver's own
    nodes use — so the signatures, every function the object graph exposes as an attribute (what
    `loaded.serve` would call), resource and restore functions, and whatever they call. The saver's
    own functions (reached from the SaverDef's save and restore nodes and from nothing else) may also
    hold the saver's ops. A TF1 SavedModel (no object graph) is refused: its loader runs the graph's
    own restore and init ops. Objects with custom save/restore code are refused."""
    import_tf()  # TensorFlow's first import in this process goes through clsf's (its settings)
    from tensorflow.core.protobuf import saved_model_pb2

    pb = folder / "saved_model.pb"
    sm = saved_model_pb2.SavedModel()
    try:
        sm.ParseFromString(pb.read_bytes())
        meta = sm.meta_graphs[0]
    except Exception as e:  # noqa: BLE001 - a damaged or foreign file
        raise UserError(f"{pb} is not a SavedModel clsf can read ({type(e).__name__}); export the run again.") from None
    if len(sm.meta_graphs) != 1:
        raise _refuse(folder, f"{len(sm.meta_graphs)} graphs (clsf's exports hold one)")
    objects = meta.object_graph_def.nodes
    if not objects:
        raise _refuse(folder, "a TensorFlow 1 graph (its loader runs the graph's own restore and init ops)")
    if any(o.saveable_objects or o.registered_saver for o in objects):
        raise _refuse(folder, "objects with their own save/restore functions")
    graph = meta.graph_def
    functions = {f.signature.name: f for f in graph.library.function}
    top = {n.name: n for n in graph.node}

    def called(node):
        for attr in node.attr.values():
            names = [attr.func.name] if attr.HasField("func") else [f.name for f in attr.list.func]
            yield from (n for n in names if n)

    def closure(nodes: list[str], fns: list[str]) -> tuple[set[str], set[str]]:
        """The top-level nodes (inputs followed) and functions (calls followed) these start from."""
        seen_nodes, seen_fns = set(), set()
        while nodes or fns:
            if nodes:
                name = nodes.pop().split(":")[0].lstrip("^")
                if name in seen_nodes or name not in top:
                    continue
                seen_nodes.add(name)
                nodes += list(top[name].input)
                fns += list(called(top[name]))
            else:
                name = fns.pop()
                if name in seen_fns or name not in functions:
                    continue
                seen_fns.add(name)
                fns += [f for n in functions[name].node_def for f in called(n)]
        return seen_nodes, seen_fns

    s = meta.saver_def
    _, saver_fns = closure([s.save_tensor_name, s.restore_op_name], [])
    exposed = [f for o in objects for f in ([o.bare_concrete_function.concrete_function_name]
                                           + list(o.function.concrete_functions)) if f]
    starts = [t.name for sig in meta.signature_def.values() for t in sig.outputs.values()]
    serve_nodes, serve_fns = closure(starts, exposed)
    strict = serve_fns | (set(functions) - saver_fns)  # a function the saver does not use is checked as serving code
    for name in sorted(functions):
        allowed = TF_SERVE_OPS if name in strict else TF_SERVE_OPS | TF_SAVER_OPS
        bad = sorted({n.op for n in functions[name].node_def} - allowed)
        if bad:
            raise _refuse(folder, f"the operation {bad[0]}")
    for name, node in top.items():
        if node.op not in (TF_SERVE_OPS if name in serve_nodes else TF_SERVE_OPS | TF_SAVER_OPS):
            raise _refuse(folder, f"the operation {node.op}")


# What a .keras archive holds, and the classes its config may name: those clsf's Keras builder uses
KERAS_FILES = {"metadata.json", "config.json", "model.weights.h5"}
KERAS_CLASSES = set(("Functional Sequential InputLayer Conv2D Conv2DTranspose DepthwiseConv2D Dense MaxPooling2D "
                     "AveragePooling2D GlobalAveragePooling2D GlobalMaxPooling2D Flatten Reshape Dropout "
                     "BatchNormalization Rescaling Activation Add Multiply Softmax ZeroPadding2D ReLU DTypePolicy "
                     "GlorotUniform HeUniform VarianceScaling RandomUniform Zeros Ones Constant L1L2 "
                     "__keras_tensor__ __numpy__ __tuple__").split())


def check_keras(path: Path) -> None:
    """Before Keras reads it (with safe_mode): the archive holds each name once and only a .keras
    file's three members; its config names only Keras' own classes of the kinds clsf builds (and clsf's
    registered layers), never a layer that loads other files or code (TFSMLayer, Lambda, lookups);
    its weights file links to no other file (HDF5 external links or storage)."""
    import json

    try:
        with zipfile.ZipFile(path) as z:
            names = [i.filename for i in z.infolist()]
            config = json.loads(z.read("config.json")) if "config.json" in names else None
            weights = z.read("model.weights.h5") if "model.weights.h5" in names else None
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise UserError(f"{path} is not a .keras file clsf can read ({str(e).splitlines()[0][:120]}); export the "
                        "run again.") from None
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise _refuse(path, f"the name {twice[0]} twice")
    odd = sorted(set(names) - KERAS_FILES)
    if odd or config is None:
        raise _refuse(path, f"a member {odd[0]}" if odd else "no config.json")

    def walk(node):
        if isinstance(node, dict):
            if "class_name" in node:
                cls, module = node["class_name"], node.get("module")
                registered = node.get("registered_name")
                ours = isinstance(registered, str) and registered.startswith("clsf>")
                if not ours and (cls not in KERAS_CLASSES or not (module is None or re.match(r"keras(\.|$)", str(module)))):
                    raise _refuse(path, f"the class {module + '.' if module else ''}{cls}")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(config)
    if weights is not None:
        _check_h5_links(path, weights)


def _check_h5_links(path: Path, raw: bytes) -> None:
    from clsf.models.pretrained import h5_problems

    found = h5_problems(path, raw)
    if found:
        raise _refuse(path, found[0])
