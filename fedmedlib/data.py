"""Load the official BloodMNIST file, verified by its md5, as uint8 images and int64 labels.

References:
    Yang et al., "MedMNIST v2", Scientific Data 10:41 (2023) — data and md5 (medmnist.INFO).
    Acevedo et al., Data in Brief 30 (2020) — the original blood-cell images. Licence CC BY 4.0.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np

FLAG = "bloodmnist"
FILENAME = f"{FLAG}.npz"
SPLITS = ("train", "val", "test")
# The paper's code: ToTensor then Normalize(mean=0.5, std=0.5) on every channel.
MEAN, STD = 0.5, 0.5

_verified: dict[tuple[str, int, float], str] = {}


class DataError(RuntimeError):
    """The BloodMNIST file is missing, corrupt, or not the official one."""


def info() -> dict:
    """medmnist's INFO entry for BloodMNIST (class names, md5, sample counts)."""
    try:
        import medmnist
    except ImportError as err:  # pragma: no cover - medmnist is a declared dependency
        raise DataError("medmnist is not installed: run `make test` (it builds .venv) or "
                        "`pip install --no-deps medmnist==3.0.2`") from err
    return medmnist.INFO[FLAG]


def class_names() -> list[str]:
    """The eight cell types, in label order, as medmnist names them."""
    labels = info()["label"]
    return [labels[str(i)] for i in range(len(labels))]


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where the file lives: the argument, else env FEDMED_DATA, else ~/.fedmed/data when it holds the file,
    else medmnist's own folder ~/.medmnist (where medmnist downloads it, e.g. on Colab, and where any other
    medmnist code finds it)."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("FEDMED_DATA"):
        return Path(os.environ["FEDMED_DATA"]).expanduser()
    ours = Path.home() / ".fedmed" / "data"
    return ours if (ours / FILENAME).is_file() else medmnist_root()


def medmnist_root() -> Path:
    """medmnist's default root, ~/.medmnist (medmnist.info.get_default_root), read at call time."""
    return Path.home() / ".medmnist"


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(root: Path) -> None:
    """Let medmnist fetch the file (works online and on Colab, where torchvision is present)."""
    import medmnist

    root.mkdir(parents=True, exist_ok=True)
    medmnist.BloodMNIST(split="test", root=str(root), download=True)


def _missing_error(path: Path, cause: BaseException | None) -> DataError:
    first_line = next((ln.strip() for ln in str(cause).splitlines() if ln.strip()), "") if cause else ""
    why = f" (medmnist's download failed: {type(cause).__name__}: {first_line})" if cause else ""
    return DataError(
        f"BloodMNIST not found at {path}{why}. Put the official bloodmnist.npz "
        f"(md5 {info()['MD5']}, from {info()['url']}) in that folder, or point the loader at the "
        "folder that holds it: load_bloodmnist(root=...) or the environment variable FEDMED_DATA."
    )


def ensure_file(root: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Return the path of a verified bloodmnist.npz, downloading it if missing and allowed."""
    path = data_root(root) / FILENAME
    if not path.is_file():
        cause = None
        if download:
            try:
                _download(path.parent)
            except Exception as err:  # any failure becomes the one clear error below
                cause = err
        if not path.is_file():
            raise _missing_error(path, cause)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime)
    if key not in _verified:
        expected = info()["MD5"]
        got = md5sum(path)
        if got != expected:
            raise DataError(
                f"{path} is not the official BloodMNIST file: md5 {got}, expected {expected}. "
                "It is truncated, corrupt or another data set; delete it and download it again "
                f"(from {info()['url']}), or let medmnist fetch it by removing the file."
            )
        _verified[key] = got
    return path


def load_bloodmnist(split: str = "train", root: str | os.PathLike | None = None, *,
                    download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28, 3) and labels int64 (N,) of one official split.

    >>> x, y = load_bloodmnist("test")            # doctest: +SKIP
    >>> x.shape, x.dtype, y.shape, y.dtype         # doctest: +SKIP
    ((3421, 28, 28, 3), dtype('uint8'), (3421,), dtype('int64'))
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {SPLITS}")
    path = ensure_file(root, download=download)
    try:
        with np.load(path) as npz:
            images = np.asarray(npz[f"{split}_images"])
            labels = np.asarray(npz[f"{split}_labels"])
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as err:
        raise DataError(f"{path} could not be read ({err}); delete it and download it again") from err
    expected = info()["n_samples"][split]
    if images.shape != (expected, 28, 28, 3) or images.dtype != np.uint8 or len(labels) != expected:
        raise DataError(f"{path}: split {split!r} has images {images.shape} {images.dtype} and "
                        f"{len(labels)} labels, expected ({expected}, 28, 28, 3) uint8")
    return images, labels.reshape(-1).astype(np.int64)


def to_tensors(images: np.ndarray, labels: np.ndarray, device=None):
    """Normalised float32 images (N, 3, 28, 28) in [-1, 1] and int64 labels, as the paper's code feeds them."""
    import torch

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images of shape (N, 28, 28, 3), got {images.shape} {images.dtype}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    x = x.sub_(MEAN).div_(STD).contiguous()
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=device)
    return x, y


def subset_indices(n: int, size: int | None, seed: int) -> np.ndarray:
    """A seeded random subset of range(n) (all of it when `size` is None)."""
    if size is None or size >= n:
        return np.arange(n)
    if size < 1:
        raise ValueError(f"subset size must be at least 1, got {size}")
    return np.sort(np.random.default_rng(seed).permutation(n)[:size])
