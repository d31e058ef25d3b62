"""Where each rule's limit comes from: a TensorRT version and a public document.

Every rule names one or more of these. ``docs/tensorrt-lint.md`` prints the same table for people.
Nothing here is fetched at run time; the URLs are for readers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """A document a limit was read from: ``version`` is the TensorRT release it describes."""

    version: str
    document: str
    url: str

    def __str__(self) -> str:
        return f"TensorRT {self.version}, {self.document} <{self.url}>"


ONNX_OPS_10_1 = Source(
    "10.0/10.1", "onnx-tensorrt docs/operators.md (release/10.1-GA)",
    "https://github.com/onnx/onnx-tensorrt/blob/release/10.1-GA/docs/operators.md")
# The 10.15 matrix was read from a stored copy of onnx-tensorrt's docs/operators.md whose header reads
# "TensorRT 10.15 supports operators in the inclusive range of opset 9 to opset 24"; its branch was not
# pinned, so the URL is the file on main (which moves with newer releases).
ONNX_OPS_10_15 = Source(
    "10.15", "onnx-tensorrt docs/operators.md (the revision headed 'TensorRT 10.15 supports operators ...')",
    "https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md")
IMPORTERS_10_1 = Source(
    "10.1", "onnx-tensorrt onnxOpImporters.cpp (release/10.1-GA): ScatterND, ScatterElements, CumSum, "
            "fallback plugin importer",
    "https://github.com/onnx/onnx-tensorrt/blob/release/10.1-GA/onnxOpImporters.cpp")
IMPORTER_UTILS_10_1 = Source(
    "10.1", "onnx-tensorrt importerUtils.cpp (release/10.1-GA): reduceTensor, 'Axis input must be an initializer!'",
    "https://github.com/onnx/onnx-tensorrt/blob/release/10.1-GA/importerUtils.cpp")
SCATTER_LAYER_HELPER = Source(
    "10.x", "onnx-tensorrt importerUtils.cpp addScatterLayer: for ScatterElements, 'Indices dimensions must be less "
            "than data dimensions!' (and the same for updates) on every axis whose sizes are known at parse time",
    "https://github.com/onnx/onnx-tensorrt/blob/main/importerUtils.cpp")
TOPK_LAYER = Source(
    "latest (10.x/11.x)", "TensorRT Operators documentation: TopK (k <= 3840)",
    "https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/TopK.html")
CUMULATIVE_LAYER = Source(
    "latest (10.x/11.x)", "TensorRT Operators documentation: Cumulative (axis a build-time constant)",
    "https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/Cumulative.html")
SCATTER_PLUGIN = Source(
    "10.0+", "TensorRT OSS plugin/scatterElementsPlugin/README.md (INT64 indices only; no BF16/INT8)",
    "https://github.com/NVIDIA/TensorRT/blob/release/10.0/plugin/scatterElementsPlugin/README.md")
TRT_11_0_RELEASE = Source(
    "11.0", "TensorRT OSS v11.0 release notes (parser: Swish, TRT_Attention, TRT_MoE, TRT_KVCacheUpdate)",
    "https://github.com/NVIDIA/TensorRT/releases/tag/v11.0")
TRT_11_1_RELEASE = Source(
    "11.1", "TensorRT OSS v11.1 release notes (new topkLastDimPlugin; the parser does not insert it)",
    "https://github.com/NVIDIA/TensorRT/releases/tag/v11.1")
TRT_11_MIGRATION = Source(
    "11.x", "Migrating from TensorRT 10.x to 11.x (strongly typed networks required)",
    "https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x.html")
PLATFORM = Source(
    "10.x-11.1", "ffexport shared/PLATFORM.md, 'TensorRT ONNX constraints' (project's checked facts)",
    "shared/PLATFORM.md")
