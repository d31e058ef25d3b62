"""The CUDA kernels and the TensorRT plugin sources compile (CMake, nvcc for sm_80 and sm_90, the
public TensorRT headers of kernel-lens), and the GPU check program builds and behaves.

Nothing CUDA runs on the development machines (no driver): the kernels' numerics are checked by
``ffexport_kernel_check`` in a session with a GPU (the last test here, skipped elsewhere).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # nvcc and the TensorRT headers: tens of seconds on 2 cores


#: the object files of the plugin library, by CMake target (the plugins; the library entry points)
PLUGIN_OBJECTS = {
    "ffexport_plugin_objects": {"frameFusionMergePlugin.cpp.o", "frameFusionPrunePlugin.cpp.o",
                                "frameFusionPluginUtils.cpp.o"},
    "ffexport_plugin_entry": {"frameFusionPlugins.cpp.o"},
}


def cuda_device() -> bool:
    try:
        import torch

        if torch.cuda.is_available():
            return True
    except ImportError:
        pass
    smi = shutil.which("nvidia-smi")
    return bool(smi) and subprocess.run([smi, "-L"], capture_output=True).returncode == 0


def require_cuda(native_build) -> None:
    if not native_build.has_cuda():
        pytest.skip("no CUDA compiler found by CMake (nvcc absent): FFEXPORT_CUDA is off")


def require_tensorrt_headers(native_build) -> None:
    if native_build.tensorrt_include() is None:
        pytest.skip("TensorRT headers not found (pip install --no-deps kernel-lens==2.0.1, or TensorRT_ROOT)")


def test_kernels_build_as_a_static_library_for_sm80_and_sm90(native_build):
    require_cuda(native_build)
    native_build.build("ffexport_kernels")
    library = native_build.folder / "libffexport_kernels.a"
    assert library.is_file()
    symbols = subprocess.run(["nm", "-C", str(library)], capture_output=True, text=True, check=True).stdout
    assert "ffexport::launchFrameFusionMerge(" in symbols
    assert "ffexport::launchFrameFusionPrune(" in symbols
    assert "ffexport::frameFusionMergeWorkspaceSize(" in symbols
    commands = json.loads((native_build.folder / "compile_commands.json").read_text())
    kernels = [c["command"] for c in commands if c["file"].endswith("Kernel.cu")]
    assert len(kernels) == 2
    for command in kernels:
        assert "sm_80" in command and "sm_90" in command, command


def test_plugin_sources_compile_against_the_tensorrt_headers(native_build):
    require_cuda(native_build)
    require_tensorrt_headers(native_build)
    native_build.build("ffexport_plugin_objects", "ffexport_plugin_entry")
    for target, names in PLUGIN_OBJECTS.items():
        built = {p.name for p in native_build.folder.rglob(f"CMakeFiles/{target}.dir/**/*.o")}
        assert names <= built, (target, built)
    if native_build.tensorrt_lib() is None:
        assert "compiled as an OBJECT library (a compile check)" in native_build.configure_output
        return
    native_build.build("ffexport_plugins")
    exported = subprocess.run(
        ["nm", "-D", "--defined-only", str(native_build.folder / "libffexport_plugins.so")],
        capture_output=True, text=True, check=True,
    ).stdout
    assert " getCreators" in exported and " setLoggerFinder" in exported


def test_plugins_refuse_bad_attributes_and_shapes_through_the_tensorrt_interfaces(native_build):
    """plugins/tests/plugin_host_check.cpp drives the creators and build-time methods as TensorRT does."""
    require_cuda(native_build)
    require_tensorrt_headers(native_build)
    native_build.build("ffexport_plugin_host_check")
    result = subprocess.run([str(native_build.folder / "ffexport_plugin_host_check")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all plugin host checks passed" in result.stdout
    assert "FAIL" not in result.stdout
    errors = result.stderr
    # every refusal was reported with its reason (no logger attached: stderr)
    for reason in [
        "[ffexport plugin] FrameFusionMerge: visual must be float32, float16 or bfloat16",
        "[ffexport plugin] FrameFusionMerge: remove=3 must be < n=3",
        "[ffexport plugin] FrameFusionMerge: visual must be 2-D [n, D] (got 3 dims)",
        "[ffexport plugin] FrameFusionMerge: attribute remove=0 must be >= 1",
        "[ffexport plugin] FrameFusionMerge: attribute patches_per_frame=0 must be >= 1",
        "[ffexport plugin] FrameFusionMerge: missing attribute patches_per_frame",
        "[ffexport plugin] FrameFusionMerge: attribute remove must be an int32 or int64 field",
        "[ffexport plugin] FrameFusionMerge: no attributes given",
        "[ffexport plugin] FrameFusionPrune: importance must be float32",
        "[ffexport plugin] FrameFusionPrune: keep=7 must be < n=7",
        "[ffexport plugin] FrameFusionPrune: attribute keep=0 must be >= 1",
    ]:
        assert reason in errors, reason


def test_loading_the_plugin_library_registers_both_creators(native_build, tmp_path):
    """libffexport_plugins.so, linked from this build's objects against a stand-in for libnvinfer's
    registry (plugins/tests/fake_nvinfer.cpp; no TensorRT here), registers FrameFusionMerge and
    FrameFusionPrune under version 1, namespace ffexport when loaded (as `polygraphy --plugins` loads
    it), and exports getCreators / setLoggerFinder only. With a real TensorRT, CMake links the same
    objects (-DTensorRT_ROOT=...)."""
    require_cuda(native_build)
    include = native_build.tensorrt_include()
    if include is None:
        pytest.skip("TensorRT headers not found (pip install --no-deps kernel-lens==2.0.1, or TensorRT_ROOT)")
    if native_build.tensorrt_lib() is not None:
        pytest.skip("a real libnvinfer is present: CMake links libffexport_plugins.so itself")
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    native_build.build("ffexport_plugin_objects", "ffexport_plugin_entry", "ffexport_kernels")
    folder = native_build.folder
    cudart = native_build.cache["CUDA_cudart_LIBRARY"]  # <toolkit>/lib[64]/libcudart.so
    cuda_include = str(Path(cudart).resolve().parents[1] / "include")
    fake = tmp_path / "libnvinfer.so"
    source = Path(__file__).resolve().parents[2] / "plugins" / "tests" / "fake_nvinfer.cpp"
    subprocess.run(
        ["g++", "-std=c++17", "-shared", "-fPIC", "-isystem", include, "-isystem", cuda_include, str(source),
         "-o", str(fake)],
        check=True, capture_output=True,
    )
    objects = [str(p) for target, names in PLUGIN_OBJECTS.items()
               for p in folder.rglob(f"CMakeFiles/{target}.dir/**/*.o") if p.name in names]
    library = tmp_path / "libffexport_plugins.so"
    link = subprocess.run(
        ["g++", "-shared", "-o", str(library), *objects, str(folder / "libffexport_kernels.a"), str(fake), cudart,
         "-Wl,--exclude-libs,ALL", "-Wl,--no-undefined", f"-Wl,-rpath,{tmp_path}:{Path(cudart).parent}"],
        capture_output=True, text=True,
    )
    assert link.returncode == 0, link.stderr
    exported = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True,
                              check=True).stdout
    functions = sorted(line.split()[-1] for line in exported.splitlines() if " T " in line)
    assert functions == ["getCreators", "setLoggerFinder"]
    probe = (
        "import ctypes, os, sys\n"
        f"nv = ctypes.CDLL({str(fake)!r}, mode=os.RTLD_NOW | ctypes.RTLD_GLOBAL)\n"
        "buf = ctypes.create_string_buffer(512)\n"
        "assert nv.fake_nvinfer_registered(buf, 512) == 0\n"
        f"lib = ctypes.CDLL({str(library)!r})\n"
        "count = nv.fake_nvinfer_registered(buf, 512)\n"
        "n = ctypes.c_int32(0)\n"
        "lib.getCreators.restype = ctypes.c_void_p\n"
        "assert lib.getCreators(ctypes.byref(n))\n"
        "print(count, buf.value.decode(), n.value)\n"
    )
    # in a child process: the fake registry must not stay loaded in the test process
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "FrameFusionMerge/1/ffexport;FrameFusionPrune/1/ffexport;", "2"]


def test_kernel_check_program_builds_and_needs_a_device(native_build):
    require_cuda(native_build)
    if cuda_device():
        pytest.skip("a CUDA device is present: test_kernels_match_the_reference_on_a_gpu runs the program")
    native_build.build("ffexport_kernel_check")
    result = subprocess.run([str(native_build.folder / "ffexport_kernel_check")], capture_output=True, text=True)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no CUDA device" in result.stderr


@pytest.mark.skipif(not cuda_device(), reason="no CUDA device")
def test_kernels_match_the_reference_on_a_gpu(native_build):
    require_cuda(native_build)
    native_build.build("ffexport_kernel_check")
    result = subprocess.run([str(native_build.folder / "ffexport_kernel_check")], capture_output=True, text=True)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all cases match the CPU reference" in result.stdout
