"""The pipeline's joint BERT model (keras-hub BertBackbone, masked mean pooling, linear head, sigmoid) as an ONNX
graph with the same weights, for ONNX Runtime to run on the same batches (`cpu_limit.py`).

Written op by op from the Keras weights with `onnx.helper` (standard opset 20 ops only: Gather, LayerNormalization,
MatMul, Softmax, Gelu ...), so no exporter (tf2onnx, torch) is needed. `export` checks nothing by itself:
`cpu_limit.py` compares ONNX Runtime's outputs with the Keras model's on real batches before timing them.
Only what the benchmark measures is covered: model.pooling = mean, model.head = linear, one sequence, BERT's
post-norm blocks with keras-hub's tanh GELU.
"""
from __future__ import annotations

import numpy as np

OPSET = 20  # Gelu(approximate="tanh") is standard from opset 20
INPUTS = ("token_ids", "segment_ids", "padding_mask")


class _Graph:
    """Nodes and weights under construction, each name made unique."""

    def __init__(self):
        from onnx import helper

        self.helper, self.nodes, self.weights, self.n = helper, [], [], 0

    def const(self, array, name: str = "w") -> str:
        from onnx import numpy_helper

        self.n += 1
        name = f"{name}_{self.n}"
        self.weights.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, kind: str, *inputs: str, **attrs) -> str:
        self.n += 1
        out = f"{kind.lower()}_{self.n}"
        self.nodes.append(self.helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    def dense(self, x: str, kernel, bias) -> str:
        return self.op("Add", self.op("MatMul", x, self.const(kernel.astype(np.float32), "kernel")),
                       self.const(bias.astype(np.float32), "bias"))

    def layer_norm(self, x: str, gamma, beta, eps: float) -> str:
        return self.op("LayerNormalization", x, self.const(gamma, "gamma"), self.const(beta, "beta"), axis=-1,
                       epsilon=eps)


def _weights(layer) -> dict:
    """A layer's variables by their path inside it ('self_attention_layer/query/kernel' -> array)."""
    return {w.path.split("/", 1)[1]: np.asarray(w.numpy(), np.float32) for w in layer.weights}


def export(model):
    """An onnx.ModelProto computing `model` (a QuestModel: joint BERT, mean pooling, linear head) on int32
    token_ids, segment_ids and padding_mask of any batch size and width."""
    import onnx
    from onnx import TensorProto, helper

    backbone = model.backbone
    cfg = backbone.get_config()
    heads, hidden = cfg["num_heads"], cfg["hidden_dim"]
    head_dim = hidden // heads
    g = _Graph()
    tok, seg, mask = INPUTS
    width = g.op("Slice", g.op("Shape", tok), g.const(np.array([1], np.int64)), g.const(np.array([2], np.int64)))
    positions = g.op("Slice", g.const(_weights(backbone.get_layer("position_embedding"))["embeddings"], "positions"),
                     g.const(np.array([0], np.int64)), width, g.const(np.array([0], np.int64)))
    x = g.op("Add", g.op("Add", g.op("Gather", g.const(_weights(backbone.get_layer("token_embedding"))["embeddings"],
                                                       "tokens"), tok), positions),
             g.op("Gather", g.const(_weights(backbone.get_layer("segment_embedding"))["embeddings"], "segments"), seg))
    norm = _weights(backbone.get_layer("embeddings_layer_norm"))
    eps = backbone.get_layer("transformer_layer_0").get_config()["layer_norm_epsilon"]
    x = g.layer_norm(x, norm["gamma"], norm["beta"], eps)
    maskf = g.op("Cast", mask, to=TensorProto.FLOAT)
    # keys outside the mask get a large negative logit, as Keras' masked softmax does
    bias = g.op("Unsqueeze", g.op("Mul", g.op("Sub", g.const(np.float32(1.0), "one"), maskf),
                                  g.const(np.float32(-1e9), "neg")), g.const(np.array([1, 2], np.int64)))
    split = g.const(np.array([0, 0, heads, head_dim], np.int64), "split")
    merge = g.const(np.array([0, 0, hidden], np.int64), "merge")
    for i in range(cfg["num_layers"]):
        w = _weights(backbone.get_layer(f"transformer_layer_{i}"))
        a = "self_attention_layer/"

        def project(name):
            return g.op("Reshape", g.dense(x, w[a + name + "/kernel"].reshape(hidden, hidden),
                                           w[a + name + "/bias"].reshape(hidden)), split)

        q = g.op("Transpose", project("query"), perm=[0, 2, 1, 3])
        k = g.op("Transpose", project("key"), perm=[0, 2, 3, 1])
        v = g.op("Transpose", project("value"), perm=[0, 2, 1, 3])
        scores = g.op("Add", g.op("Mul", g.op("MatMul", q, k), g.const(np.float32(head_dim ** -0.5), "scale")), bias)
        context = g.op("Reshape", g.op("Transpose", g.op("MatMul", g.op("Softmax", scores, axis=-1), v),
                                       perm=[0, 2, 1, 3]), merge)
        attended = g.dense(context, w[a + "attention_output/kernel"].reshape(hidden, hidden),
                           w[a + "attention_output/bias"])
        x = g.layer_norm(g.op("Add", x, attended), w["self_attention_layer_norm/gamma"],
                         w["self_attention_layer_norm/beta"], eps)
        inner = g.op("Gelu", g.dense(x, w["feedforward_intermediate_dense/kernel"],
                                     w["feedforward_intermediate_dense/bias"]), approximate="tanh")
        out = g.dense(inner, w["feedforward_output_dense/kernel"], w["feedforward_output_dense/bias"])
        x = g.layer_norm(g.op("Add", x, out), w["feedforward_layer_norm/gamma"], w["feedforward_layer_norm/beta"], eps)
    keep = g.op("Unsqueeze", maskf, g.const(np.array([-1], np.int64)))
    axis = g.const(np.array([1], np.int64))
    pooled = g.op("Div", g.op("ReduceSum", g.op("Mul", x, keep), axis, keepdims=0),
                  g.op("Max", g.op("ReduceSum", keep, axis, keepdims=0), g.const(np.float32(1.0), "one")))
    hw = {v.path.rsplit("/", 1)[-1]: np.asarray(v.numpy(), np.float32) for v in _head(model).weights}
    g.nodes.append(helper.make_node("Sigmoid", [g.dense(pooled, hw["kernel"], hw["bias"])], ["outputs"]))
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT32, ["batch", "width"]) for name in INPUTS]
    outputs = [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["batch", int(hw["bias"].shape[0])])]
    graph = helper.make_graph(g.nodes, "quest_bert", inputs, outputs, initializer=g.weights)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(proto)
    return proto


def _head(model):
    """The linear TargetHead (one Dense over all targets) of a QuestModel."""
    from pipeline.modeling.layers import TargetHead

    heads = [l for l in model.layers if isinstance(l, TargetHead)]
    if len(heads) != 1 or heads[0].hidden:
        raise ValueError("onnx_bert.export covers one linear head (model.head = linear)")
    return heads[0].dense


def session(proto, threads: int = 0, optimize: bool = True):
    """An ONNX Runtime CPU session of `proto`: all graph optimisations (fusions) unless optimize is False;
    threads 0 = ONNX Runtime's default (one per physical core)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
