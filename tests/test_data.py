import numpy as np
import pytest
import torch

from fedmedlib import data


def test_real_file_has_official_shapes_and_dtypes(real_data_root):
    for split, n in {"train": 11959, "val": 1712, "test": 3421}.items():
        x, y = data.load_bloodmnist(split, real_data_root)
        assert x.shape == (n, 28, 28, 3) and x.dtype == np.uint8
        assert y.shape == (n,) and y.dtype == np.int64


def test_real_train_class_counts_match_medmnist(real_data_root):
    _, y = data.load_bloodmnist("train", real_data_root)
    assert np.bincount(y).tolist() == [852, 2181, 1085, 2026, 849, 993, 2330, 1643]


def test_class_names_come_from_medmnist_info():
    names = data.class_names()
    assert len(names) == 8 and names[0] == "basophil" and names[7] == "platelet"


def test_root_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDMED_DATA", str(tmp_path / "env"))
    assert data.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data.data_root() == tmp_path / "env"
    monkeypatch.delenv("FEDMED_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.data_root() == tmp_path / "home" / ".medmnist"  # medmnist's own folder, as on Colab
    ours = tmp_path / "home" / ".fedmed" / "data"
    ours.mkdir(parents=True)
    (ours / data.FILENAME).write_bytes(b"")
    assert data.data_root() == ours  # a file already in ~/.fedmed/data is still found there


def test_missing_file_without_download_names_the_place_to_put_it(tmp_path):
    with pytest.raises(data.DataError, match=r"not found at .*bloodmnist\.npz.*FEDMED_DATA"):
        data.load_bloodmnist("train", tmp_path, download=False)


def test_missing_file_tries_medmnist_download_then_explains(monkeypatch, tmp_path):
    calls = []

    def failing_download(root):
        calls.append(root)
        raise RuntimeError("Automatic download failed!\nmore detail")

    monkeypatch.setattr(data, "_download", failing_download)
    with pytest.raises(data.DataError, match="download failed: RuntimeError: Automatic download failed!"):
        data.load_bloodmnist("test", tmp_path)
    assert calls == [tmp_path]


def test_wrong_md5_file_is_refused_with_its_name(fake_root):
    root, _ = fake_root
    with pytest.raises(data.DataError, match=r"bloodmnist\.npz is not the official BloodMNIST file: md5"):
        data.load_bloodmnist("train", root, download=False)


def test_truncated_file_is_refused(real_data_root, tmp_path):
    blob = (real_data_root / data.FILENAME).read_bytes()
    (tmp_path / data.FILENAME).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(data.DataError, match="truncated, corrupt"):
        data.load_bloodmnist("train", tmp_path, download=False)


def test_verified_file_loads_as_uint8_images_and_flat_int64_labels(fake_root, trust_fake):
    root, arrays = fake_root
    trust_fake(root)
    x, y = data.load_bloodmnist("val", root, download=False)
    assert np.array_equal(x, arrays["val_images"])
    assert y.dtype == np.int64 and np.array_equal(y, arrays["val_labels"].ravel())


def test_unreadable_file_with_matching_md5_is_refused(tmp_path, trust_fake):
    (tmp_path / data.FILENAME).write_bytes(b"not a zip archive at all")
    trust_fake(tmp_path)
    with pytest.raises(data.DataError, match="could not be read"):
        data.load_bloodmnist("train", tmp_path, download=False)


def test_file_with_wrong_sizes_is_refused(fake_root, trust_fake):
    root, _ = fake_root
    trust_fake(root, n=(21, 6, 8))
    with pytest.raises(data.DataError, match="expected \\(21, 28, 28, 3\\)"):
        data.load_bloodmnist("train", root, download=False)


def test_unknown_split_is_an_error():
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        data.load_bloodmnist("valid")


def test_to_tensors_normalises_like_the_paper():
    images = np.zeros((2, 28, 28, 3), np.uint8)
    images[1] = 255
    x, y = data.to_tensors(images, np.array([3, 5]))
    assert x.shape == (2, 3, 28, 28) and x.dtype == torch.float32
    assert torch.all(x[0] == -1) and torch.all(x[1] == 1)
    assert y.tolist() == [3, 5] and y.dtype == torch.int64


def test_to_tensors_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8 images of shape"):
        data.to_tensors(np.zeros((2, 28, 28, 3), np.float32), np.zeros(2))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        data.to_tensors(np.zeros((2, 28, 28, 3), np.uint8), np.zeros(3))


def test_subset_indices_are_seeded_sorted_and_unique():
    a, b = data.subset_indices(100, 10, seed=1), data.subset_indices(100, 10, seed=1)
    assert np.array_equal(a, b) and len(np.unique(a)) == 10 and np.all(np.diff(a) > 0)
    assert len(data.subset_indices(100, None, 0)) == 100
    with pytest.raises(ValueError):
        data.subset_indices(100, 0, 0)
