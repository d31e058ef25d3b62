"""Small, sourced tables the rules read: which ONNX operators TensorRT's parser takes, and with which types.

Operator names come from the parser's support matrix (``sources.ONNX_OPS_10_15``, checked against
``sources.ONNX_OPS_10_1``); TensorRT 11 adds the operators its 11.0 release notes list
(``sources.TRT_11_0_RELEASE``). Keep the type table small: only operators an exporter plausibly feeds
an unsupported type, each with the types the matrix gives.
"""

from __future__ import annotations

from onnx import TensorProto

TARGETS = ("trt10", "trt11")

# ---------------------------------------------------------------- operators (default ONNX domain)
# "Y" rows of the TensorRT 10.15 ONNX operator support matrix.
SUPPORTED_OPS_TRT10 = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization
BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten
Floor GRU Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater
GreaterOrEqual GridSample GroupNormalization HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity
If ImageScaler InstanceNormalization IsInf IsNaN LRN LSTM LayerNormalization LeakyRelu Less LessOrEqual Log
LogSoftmax Loop LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul
Neg NonMaxSuppression NonZero Not OneHot Or PRelu Pad ParametricSoftplus Pow QuantizeLinear RMSNormalization
RNN RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape
Resize ReverseSequence RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND
Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze
Sub Sum Tan Tanh TensorScatter ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

# "N" rows of the same matrix (named so a finding can say "listed as unsupported", not just "unknown").
UNSUPPORTED_OPS = frozenset("""
AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor CenterCropPad Col2Im Compress
ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger MaxRoiPool MaxUnpool
MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement
QLinearConv QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty SequenceErase
SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat
StringNormalizer StringSplit TfIdfVectorizer Unique
""".split())

# TensorRT 11.0 release notes: parser support for Swish and the TRT_* custom operators.
SUPPORTED_OPS_TRT11 = SUPPORTED_OPS_TRT10 | {"Swish", "TRT_Attention", "TRT_MoE", "TRT_KVCacheUpdate"}

SUPPORTED_OPS = {"trt10": SUPPORTED_OPS_TRT10, "trt11": SUPPORTED_OPS_TRT11}

DEFAULT_DOMAINS = ("", "ai.onnx")
ML_DOMAIN = "ai.onnx.ml"

# Operators that sort or deduplicate a whole axis. ONNX has no Sort; exporters and other toolchains emit
# these under their own domains (torch's legacy ATen fallback as op "ATen" with an "operator" attribute).
SORT_LIKE_OPS = frozenset({"Unique", "Sort", "ArgSort", "Argsort", "SortV2", "UniqueConsecutive"})
SORT_LIKE_ATEN = frozenset({"sort", "argsort", "unique", "_unique", "_unique2", "unique_consecutive", "msort"})

# Operators whose output shape depends on input values.
DATA_DEPENDENT_SHAPE_OPS = frozenset({"NonZero", "NonMaxSuppression"})

REDUCE_OPS = frozenset({
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
    "ReduceProd", "ReduceSum", "ReduceSumSquare",
})
# ONNX opset where the operator's axes moved from an attribute to an optional input.
REDUCE_AXES_INPUT_SINCE = {op: (13 if op == "ReduceSum" else 18) for op in REDUCE_OPS}

# ---------------------------------------------------------------- types
F32, F16, BF16 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16
I32, I64, BOOL, U8 = TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL, TensorProto.UINT8
FLOATS = frozenset({F32, F16, BF16})

# Types TensorRT has no tensors of at all (parser matrix header: DOUBLE only by casting down to FLOAT with
# clamping; TensorRT 11 networks are strongly typed, so the ONNX must carry a TensorRT type).
NO_TRT_TYPE = frozenset({
    TensorProto.DOUBLE, TensorProto.INT16, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64,
    TensorProto.COMPLEX64, TensorProto.COMPLEX128, TensorProto.STRING,
})

# Operator -> the input types the support matrix lists (first input, and both operands of MatMul/Gemm).
# Only operators where an exporter plausibly hands over an integer or BF16 tensor.
OP_INPUT_TYPES: dict[str, frozenset[int]] = {
    **{op: FLOATS for op in (
        "MatMul", "Gemm", "Einsum", "Conv", "Softmax", "LogSoftmax", "LayerNormalization", "Sqrt", "Exp", "Log",
        "Erf", "Sin", "Cos", "Tanh", "Sigmoid", "Reciprocal", "Floor", "Ceil", "Round")},
    **{op: frozenset({F32, F16}) for op in (
        "NonZero", "NonMaxSuppression", "GridSample", "RoiAlign", "Mish", "DeformConv")},
}
TWO_OPERAND_OPS = frozenset({"MatMul", "Gemm"})

_NAMES = {
    TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16", TensorProto.BFLOAT16: "BF16",
    TensorProto.DOUBLE: "DOUBLE", TensorProto.INT8: "INT8", TensorProto.UINT8: "UINT8",
    TensorProto.INT16: "INT16", TensorProto.UINT16: "UINT16", TensorProto.INT32: "INT32",
    TensorProto.UINT32: "UINT32", TensorProto.INT64: "INT64", TensorProto.UINT64: "UINT64",
    TensorProto.BOOL: "BOOL", TensorProto.STRING: "STRING", TensorProto.COMPLEX64: "COMPLEX64",
    TensorProto.COMPLEX128: "COMPLEX128",
}


def type_name(elem_type: int | None) -> str:
    """TensorRT-style short name of an ONNX element type (FP32, BF16, INT64, ...)."""
    if elem_type is None:
        return "unknown"
    if elem_type in _NAMES:
        return _NAMES[elem_type]
    try:
        return TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"type {elem_type}"


def type_list(types: frozenset[int]) -> str:
    order = [F32, F16, BF16, I32, I64, BOOL]
    return "/".join(type_name(t) for t in sorted(types, key=lambda t: (order.index(t) if t in order else 99, t)))
