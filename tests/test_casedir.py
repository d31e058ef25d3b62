"""Case folders (.npy files, for the C++ runtime): written by `ffexport case --format npy`, read back by load_case."""

from __future__ import annotations

import numpy as np
import pytest

from ffexport.case import Case, load_case
from ffexport.casedir import case_dir_files, load_case_dir, save_case_dir
from ffexport.cli import main
from ffexport.errors import InputError


def _case(seed: int = 0) -> Case:
    rng = np.random.default_rng(seed)
    ids = np.array([[1, 2, *([263] * 16), 3, 4]], dtype=np.int64)
    return Case(ids, rng.standard_normal((64, 1176)).astype(np.float32), np.array([[1, 8, 8]], dtype=np.int64))


def test_round_trip(tmp_path):
    case = _case()
    save_case_dir(case, tmp_path / "case")
    assert sorted(p.name for p in (tmp_path / "case").iterdir()) == [
        "input_ids.npy", "pixel_values_videos.npy", "video_grid_thw.npy"]
    for loaded in (load_case_dir(tmp_path / "case"), load_case(tmp_path / "case")):
        for key in ("input_ids", "pixel_values_videos", "video_grid_thw"):
            assert getattr(loaded, key).dtype == getattr(case, key).dtype
            assert np.array_equal(getattr(loaded, key), getattr(case, key))
    assert not list(tmp_path.glob(".*partial*"))  # nothing left behind


def test_never_overwrites_silently(tmp_path):
    folder = save_case_dir(_case(0), tmp_path / "case")
    with pytest.raises(InputError, match="input_ids.npy already exists; pass --overwrite"):
        save_case_dir(_case(1), folder)
    assert np.array_equal(load_case(folder).pixel_values_videos, _case(0).pixel_values_videos)
    save_case_dir(_case(1), folder, overwrite=True)
    assert np.array_equal(load_case(folder).pixel_values_videos, _case(1).pixel_values_videos)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is not a directory"):
        save_case_dir(_case(), tmp_path / "file")


def test_an_existing_empty_folder_is_filled(tmp_path):
    (tmp_path / "case").mkdir()
    save_case_dir(_case(), tmp_path / "case")
    assert all(p.is_file() for p in case_dir_files(tmp_path / "case").values())


def test_a_damaged_folder_is_one_input_error(tmp_path):
    folder = save_case_dir(_case(), tmp_path / "case")
    (folder / "video_grid_thw.npy").unlink()
    with pytest.raises(InputError, match="lacks video_grid_thw.npy"):
        load_case(folder)
    (folder / "video_grid_thw.npy").write_bytes(b"not npy")
    with pytest.raises(InputError, match="not a readable .npy file"):
        load_case(folder)


@pytest.mark.slow  # loads the tiny model three times
def test_cli_writes_a_folder_for_npy_or_a_trailing_slash(tmp_path, capsys):
    assert main(["-q", "case", "--format", "npy", "--out", str(tmp_path / "a")]) == 0
    assert main(["-q", "case", "--out", str(tmp_path / "c.npz")]) == 0
    a, c = load_case(tmp_path / "a"), load_case(tmp_path / "c.npz")
    assert (tmp_path / "a").is_dir() and (tmp_path / "c.npz").is_file()
    for key in ("input_ids", "pixel_values_videos", "video_grid_thw"):
        assert np.array_equal(getattr(a, key), getattr(c, key))
    # a trailing slash means a folder: the existing one is refused file by file
    assert main(["-q", "case", "--out", str(tmp_path / "a") + "/"]) == InputError.exit_code
    assert "a/input_ids.npy already exists; pass --overwrite" in capsys.readouterr().err
