"""Build cpp/ with CMake once per test session (shared by tests/cpp and tests/runtime/test_cpp_real_build.py).

The CMake build needs cmake, a C++17 compiler and nlohmann_json (Debian: nlohmann-json3-dev; .ci/run
installs it). The TensorRT part is compiled against the public TensorRT headers of the PyPI package
kernel-lens when it is installed, plus the CUDA toolkit's headers. Nothing here needs TensorRT's
library or a GPU; what does (ffexport-run) is compile-checked only.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KERNEL_LENS_HINT = "pip install --no-deps kernel-lens==2.0.1"
NO_JSON = "nlohmann_json 3 not found"


def kernel_lens_headers() -> Path | None:
    """The public TensorRT headers inside the PyPI package kernel-lens, when installed."""
    spec = importlib.util.find_spec("kernel_lens")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "include" / "tensorrt"
    return folder if (folder / "NvInferRuntime.h").is_file() else None


@dataclass(frozen=True)
class CppBuild:
    folder: Path
    configure_log: str
    tensorrt_headers: Path | None

    @property
    def inspect(self) -> Path:
        return self.folder / "ffexport-inspect"

    @property
    def core_test(self) -> Path:
        return self.folder / "ffexport_core_test"

    def run_inspect(self, *args: object) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.inspect), *map(str, args)], capture_output=True, text=True, timeout=60)


def build_cpp(tmp_path_factory: pytest.TempPathFactory) -> CppBuild:
    """cpp/ configured and built (-O0: the tests check behaviour, not speed), once per session:
    the result is kept in the session's base temp folder. Skips (with the reason) without cmake or
    nlohmann_json."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed: the C++ runtime cannot be built here")
    folder = tmp_path_factory.getbasetemp() / "ffexport-cppbuild"
    log, done_marker = folder / "configure.log", folder / "build.ok"
    headers = kernel_lens_headers()
    if not done_marker.is_file():
        configure = ["cmake", "-S", str(ROOT / "cpp"), "-B", str(folder), "-DCMAKE_BUILD_TYPE=Debug",
                     "-DCMAKE_CXX_FLAGS_DEBUG=-O0"]
        if headers is not None:
            configure.append(f"-DTensorRT_INCLUDE_DIR={headers}")
        done = subprocess.run(configure, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"cmake configure failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        log.write_text(done.stdout)
        if NO_JSON not in done.stdout:
            built = subprocess.run(["cmake", "--build", str(folder), "-j2"], capture_output=True, text=True, timeout=900)
            assert built.returncode == 0, f"cmake --build failed:\n{built.stdout[-4000:]}\n{built.stderr[-4000:]}"
        done_marker.write_text("ok\n")
    configure_log = log.read_text()
    if NO_JSON in configure_log:
        pytest.skip("nlohmann_json is not installed (apt-get install nlohmann-json3-dev): the C++ runtime is skipped")
    return CppBuild(folder, configure_log, headers)
