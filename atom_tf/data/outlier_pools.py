"""Auxiliary outlier pools (docs/protocol.md §4) behind a registry.

A pool is an indexable source of uint8 32×32×3 images read as contiguous runs
(`read(start, count)`), so that mining N = 400,000 candidates streams through the pool
instead of holding it: file pools read with positioned reads (no memory map in RSS),
generated pools derive every image from its index alone.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pickle
from collections.abc import Callable
from typing import Protocol

import numpy as np

from atom_tf.data.download import (
    REMOTE_FILES,
    RemoteFile,
    check_recorded_digest,
    download_dir,
    fetch,
    register_remote_file,
)
from atom_tf.data.image_files import load_image_set, smallest_side
from atom_tf.errors import DatasetNotFoundError
from atom_tf.registry import Registry

IMAGE_BYTES = 32 * 32 * 3


class OutlierPool(Protocol):
    """Images indexed 0..len-1; reads wrap around the end."""

    name: str

    def __len__(self) -> int: ...

    def read(self, start: int, count: int) -> np.ndarray:
        """Returns images start..start+count-1 (modulo len) as uint8 [count, 32, 32, 3]."""
        ...


def wrapped_runs(start: int, count: int, size: int) -> list[tuple[int, int]]:
    """Splits a run of `count` indices from `start` (modulo `size`) into contiguous pieces."""
    runs, start = [], start % size
    while count > 0:
        piece = min(count, size - start)
        runs.append((start, piece))
        count -= piece
        start = 0
    return runs


@dataclasses.dataclass
class _FilePool:
    """Images stored back to back in a file at `offset`, `layout` 'hwc' or 'chw' (Fortran)."""

    name: str
    path: str
    offset: int
    num_images: int
    layout: str = "hwc"
    first: int = 0  # images before `first` are reserved (validation) and never served

    def __len__(self) -> int:
        return self.num_images - self.first

    def read(self, start: int, count: int) -> np.ndarray:
        chunks = []
        with open(self.path, "rb") as f:
            for run_start, run_count in wrapped_runs(start, count, len(self)):
                f.seek(self.offset + (self.first + run_start) * IMAGE_BYTES)
                raw = np.frombuffer(f.read(run_count * IMAGE_BYTES), dtype=np.uint8)
                chunks.append(raw.reshape(run_count, IMAGE_BYTES))
        flat = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        if self.layout == "chw":  # 80M Tiny Images: 3×32×32, column-major per channel
            return flat.reshape(-1, 3, 32, 32).transpose(0, 3, 2, 1).copy()
        return flat.reshape(-1, 32, 32, 3)


POOLS: Registry[Callable[..., OutlierPool]] = Registry("outlier pool")
register_pool = POOLS.register
pool_names = POOLS.names


def load_pool(
    name: str, path: str | None = None, seed: int = 0, download: bool = False
) -> OutlierPool:
    """Opens a registered outlier pool; `path` is the pool's file or folder where it has one.
    A pool with a public file (atom_tf.data.download) and no `path` is downloaded into the
    download cache when `download` is set."""
    loader = POOLS.get(name)
    if not path and name in REMOTE_FILES:
        remote_path = os.path.join(download_dir(), REMOTE_FILES.get(name).filename)
        if download:
            path = fetch(name)
        elif os.path.exists(remote_path):
            path = check_recorded_digest(remote_path)
    return loader(path=path, seed=seed)


def _require_file(name: str, path: str | None, what: str) -> str:
    if not path:
        hint = " (or --download to fetch it)" if name in REMOTE_FILES else ""
        raise DatasetNotFoundError(
            f"outlier pool {name!r} needs --pool_path pointing to {what}{hint}"
        )
    if not os.path.isfile(path):
        raise DatasetNotFoundError(
            f"outlier pool {name!r}: no file at {path}; download {what} and pass its path"
            " as --pool_path"
        )
    return path


TINY_300K_IMAGES = 300_000


def check_tiny_images_300k(path: str) -> None:
    """What a download of the 300K file must be, there being no published SHA-256: a .npy of
    exactly 300,000 x 32 x 32 x 3 uint8 with nothing after the data, whose 1,000 evenly
    spaced sample images are real pictures (at most 5 % flat, at most 1 % repeated)."""
    pool = tiny_images_300k(path)
    if len(pool) != TINY_300K_IMAGES:
        raise DatasetNotFoundError(f"it holds {len(pool):,} images, not {TINY_300K_IMAGES:,}")
    if os.path.getsize(path) != pool.offset + len(pool) * IMAGE_BYTES:
        raise DatasetNotFoundError("it has bytes after the image data")
    indices = np.unique(np.linspace(0, len(pool) - 1, 1000).astype(int))
    sample = np.concatenate([pool.read(int(i), 1) for i in indices]).reshape(len(indices), -1)
    flat = np.mean(sample.std(axis=1) < 2.0)
    repeated = 1 - len({row.tobytes() for row in sample}) / len(sample)
    if flat > 0.05 or repeated > 0.01:
        raise DatasetNotFoundError(
            f"{flat:.0%} of {len(sample):,} sample images are flat and {repeated:.0%} repeated: not the "
            "300K random images"
        )


# Outlier Exposure's 300K random images (Hendrycks et al., 2019): 300,000 × 32 × 32 × 3 uint8.
register_remote_file(
    RemoteFile(
        "tiny_images_300k",
        "https://people.eecs.berkeley.edu/~hendrycks/300K_random_images.npy",
        "300K_random_images.npy",
        check=check_tiny_images_300k,
    )
)


@register_pool("tiny_images_300k")
def tiny_images_300k(path: str | None = None, seed: int = 0) -> OutlierPool:
    """Outlier Exposure's 300K random images: a .npy of 300,000 × 32 × 32 × 3 uint8."""
    del seed
    what = "300K_random_images.npy (Outlier Exposure, 300000x32x32x3 uint8)"
    path = _require_file("tiny_images_300k", path, what)
    try:
        header = np.load(path, mmap_mode="r")  # reads the header only; no data is touched
        shape, dtype, offset = header.shape, header.dtype, header.offset
        del header
    except (ValueError, OSError) as err:
        raise DatasetNotFoundError(
            f"outlier pool 'tiny_images_300k': {path} is not a .npy file ({err}); expected {what}"
        ) from err
    if dtype != np.uint8 or len(shape) != 4 or tuple(shape[1:]) != (32, 32, 3):
        raise DatasetNotFoundError(
            f"outlier pool 'tiny_images_300k': {path} holds {dtype} {shape}; expected "
            "N x 32 x 32 x 3 uint8"
        )
    if os.path.getsize(path) < offset + shape[0] * IMAGE_BYTES:
        raise DatasetNotFoundError(
            f"outlier pool 'tiny_images_300k': {path} is truncated; download it again"
        )
    return _FilePool("tiny_images_300k", path, offset, int(shape[0]))


TINY_80M_IMAGES = 79_302_017
TINY_80M_VALIDATION = 10_000


@register_pool("tiny_images_80m")
def tiny_images_80m(path: str | None = None, seed: int = 0) -> OutlierPool:
    """80 Million Tiny Images raw file (3,072 bytes per image, channel-major Fortran order).

    The first 10,000 images are reserved for validation (docs/protocol.md §3). Images that appear in
    CIFAR are excluded through the index list `80mn_cifar_idxs.txt` next to the .bin, as in
    Outlier Exposure: a read that hits an excluded index takes the next allowed image.
    """
    del seed
    what = "tiny_images.bin (80 Million Tiny Images, 3072 bytes per image)"
    path = _require_file("tiny_images_80m", path, what)
    size = os.path.getsize(path)
    if size % IMAGE_BYTES or size // IMAGE_BYTES <= TINY_80M_VALIDATION:
        raise DatasetNotFoundError(
            f"outlier pool 'tiny_images_80m': {path} has {size} bytes, not a multiple of "
            f"{IMAGE_BYTES} with more than {TINY_80M_VALIDATION} images; expected {what}"
        )
    pool = _FilePool(
        "tiny_images_80m", path, 0, size // IMAGE_BYTES, layout="chw", first=TINY_80M_VALIDATION
    )
    index_file = os.path.join(os.path.dirname(path), "80mn_cifar_idxs.txt")
    if not os.path.isfile(index_file):
        raise DatasetNotFoundError(
            f"outlier pool 'tiny_images_80m': CIFAR exclusion list {index_file} is missing; "
            "put 80mn_cifar_idxs.txt (Outlier Exposure) next to the .bin"
        )
    excluded = np.loadtxt(index_file, dtype=np.int64) - 1  # the list is 1-based
    return ExcludingPool(pool, excluded - TINY_80M_VALIDATION)


@dataclasses.dataclass
class ExcludingPool:
    """Serves a pool without the given (pool-relative) indices."""

    inner: _FilePool
    excluded: np.ndarray

    def __post_init__(self) -> None:
        self.name = self.inner.name
        keep = np.ones(len(self.inner), dtype=bool)
        valid = self.excluded[(self.excluded >= 0) & (self.excluded < len(self.inner))]
        keep[valid] = False
        self._allowed = np.flatnonzero(keep)

    def __len__(self) -> int:
        return len(self._allowed)

    def read(self, start: int, count: int) -> np.ndarray:
        # Allowed indices are increasing: read the covering span once, then pick.
        pieces = []
        for run_start, run_count in wrapped_runs(start, count, len(self)):
            lo = int(self._allowed[run_start])
            hi = int(self._allowed[run_start + run_count - 1])
            span = self.inner.read(lo, hi - lo + 1)
            pieces.append(span[self._allowed[run_start : run_start + run_count] - lo])
        return np.concatenate(pieces)


class _BlockGeneratedPool:
    """A virtual pool whose image i is generated from (seed, i // block) alone."""

    name = "generated"
    block = 1024
    virtual_size = 1 << 40
    cached_blocks = 64  # 200 MB: mining's selection pass re-reads what its scoring pass read

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._blocks: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()

    def __len__(self) -> int:
        return self.virtual_size

    def _block(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def _cached_block(self, index: int) -> np.ndarray:
        if index in self._blocks:
            self._blocks.move_to_end(index)
            return self._blocks[index]
        images = self._blocks[index] = self._block(index)
        if len(self._blocks) > self.cached_blocks:
            self._blocks.popitem(last=False)
        return images

    def read(self, start: int, count: int) -> np.ndarray:
        start %= self.virtual_size
        first, last = start // self.block, (start + count - 1) // self.block
        images = np.concatenate([self._cached_block(b) for b in range(first, last + 1)])
        offset = start - first * self.block
        return images[offset : offset + count]


def natural_photographs() -> list[np.ndarray]:
    """The photographs scikit-image and scikit-learn ship, as uint8 RGB arrays.

    The textures (brick, grass, gravel) and the LFW faces are held out as test OOD sets.
    """
    import skimage.data as skd
    from sklearn.datasets import load_sample_images

    names = [
        "astronaut", "camera", "cell", "chelsea", "clock", "coffee", "coins",
        "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon",
        "page", "retina", "rocket", "text",
    ]  # fmt: skip
    photos = [getattr(skd, n)() for n in names]
    photos.append(skd.stereo_motorcycle()[0])
    photos.extend(load_sample_images().images)
    out = []
    for photo in photos:
        photo = np.asarray(photo)
        if photo.dtype != np.uint8:
            photo = np.round(np.clip(photo, 0, 1) * 255).astype(np.uint8)
        if photo.ndim == 2:
            photo = np.repeat(photo[..., None], 3, axis=-1)
        out.append(np.ascontiguousarray(photo[..., :3]))
    return out


class NaturalPatches(_BlockGeneratedPool):
    """Endless random 32×32 crops at random scales (crop side 32..min(h, w)/2) of the
    shipped photographs, each resized to 32×32 and flipped at random. No download."""

    name = "natural_patches"

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.photos = natural_photographs()

    def _block(self, index: int) -> np.ndarray:
        import cv2

        rng = np.random.default_rng([self.seed, index])
        out = np.empty((self.block, 32, 32, 3), dtype=np.uint8)
        which = rng.integers(0, len(self.photos), self.block)
        for i, p in enumerate(which):
            photo = self.photos[p]
            h, w = photo.shape[:2]
            side = int(np.exp(rng.uniform(np.log(32), np.log(max(33, min(h, w) // 2)))))
            top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            crop = photo[top : top + side, left : left + side]
            patch = cv2.resize(crop, (32, 32), interpolation=cv2.INTER_AREA)
            out[i] = patch[:, ::-1] if rng.random() < 0.5 else patch
        return out


@register_pool("natural_patches")
def natural_patches(path: str | None = None, seed: int = 0) -> OutlierPool:
    del path
    return NaturalPatches(seed)


class _RandomCropPool(_BlockGeneratedPool):
    """Image i is a random 32×32 crop (4-pixel zero padding) of source image i mod the number
    of sources; its offset comes from (seed, i // block). Sources of side 32 are served as they
    are (the miner's augmentation crops and flips them)."""

    def _source(self, indices: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _block(self, index: int) -> np.ndarray:
        source = self._source(index * self.block + np.arange(self.block))
        side = source.shape[1]
        if side == 32:
            return source
        rng = np.random.default_rng([self.seed, index])
        padded = np.pad(source, ((0, 0), (4, 4), (4, 4), (0, 0)))
        top = rng.integers(0, side + 8 - 32 + 1, self.block)
        left = rng.integers(0, side + 8 - 32 + 1, self.block)
        rows = top[:, None] + np.arange(32)
        cols = left[:, None] + np.arange(32)
        return padded[np.arange(self.block)[:, None, None], rows[:, :, None], cols[:, None, :]]


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays and nothing else: a pickle that names any
    other callable (os.system, builtins.eval, ...) is refused before anything is called."""

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    })  # fmt: skip

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it asks to call {module}.{name}")
        return super().find_class(module, name)


def read_imagenet_batch(path: str) -> dict:
    """One Imagenet64_train batch file ({'data': uint8 N x 12288, 'labels': [...], ...}),
    read without executing anything it holds (the format has only arrays, lists and dicts)."""
    try:
        with open(path, "rb") as f:
            batch = _ArraysOnlyUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DatasetNotFoundError(
            f"outlier pool 'imagenet_rc': {path} is not an Imagenet64 batch file ({err}); "
            "nothing in it was run: replace it with the downloaded file"
        ) from err
    if not isinstance(batch, dict) or not isinstance(batch.get("data"), np.ndarray):
        raise DatasetNotFoundError(
            f"outlier pool 'imagenet_rc': {path} holds no 'data' array; expected an Imagenet64 "
            "batch file"
        )
    return {**batch, "data": np.asarray(batch["data"], dtype=np.uint8)}


class ImageNetRC(_RandomCropPool):
    """Downsampled ImageNet 64×64 (ten pickled `train_data_batch_*` files), random 32×32
    crops (docs/protocol.md §4). One batch file is held in memory at a time."""

    name = "imagenet_rc"

    def __init__(self, folder: str, seed: int) -> None:
        super().__init__(seed)
        self.files = sorted(
            (
                os.path.join(folder, f)
                for f in os.listdir(folder)
                if f.startswith("train_data_batch_")
            ),
            key=lambda f: int(f.rsplit("_", 1)[1].split(".")[0]),
        )
        if not self.files:
            raise DatasetNotFoundError(
                f"outlier pool 'imagenet_rc': no train_data_batch_* files in {folder}; download "
                "Imagenet64_train (downsampled ImageNet 64x64) and pass its folder as --pool_path"
            )
        self._cache: tuple[str, np.ndarray] | None = None
        self._starts: np.ndarray | None = None

    def _load(self, path: str) -> np.ndarray:
        if self._cache is not None and self._cache[0] == path:
            return self._cache[1]
        batch = read_imagenet_batch(path)
        data = batch["data"]
        if data.ndim != 2 or data.shape[1] != 64 * 64 * 3:
            raise DatasetNotFoundError(
                f"outlier pool 'imagenet_rc': {path} holds data of shape {data.shape}; "
                "expected N x 12288 (64x64x3, channel-major)"
            )
        images = data.reshape(-1, 3, 64, 64).transpose(0, 2, 3, 1)
        self._cache = (path, images)
        return images

    def _source(self, indices: np.ndarray) -> np.ndarray:
        if self._starts is None:  # batch sizes, read once (files are opened lazily)
            sizes = [self._load(f).shape[0] for f in self.files]
            self._starts = np.cumsum([0, *sizes])
        indices = indices % self._starts[-1]
        out = np.empty((len(indices), 64, 64, 3), dtype=np.uint8)
        which = np.searchsorted(self._starts, indices, side="right") - 1
        for b in np.unique(which):
            sel = which == b
            out[sel] = self._load(self.files[b])[indices[sel] - self._starts[b]]
        return out


def pool_validation_size(num_sources: int) -> int:
    """Sources reserved for validation (choosing q, docs/protocol.md §3): 10% of the pool, at most
    10,000 (the paper's validation set size)."""
    return min(10_000, num_sources // 10)


class ImageFilePool(_RandomCropPool):
    """Every image under a folder or .zip (atom_tf.data.image_files), in a fixed shuffled
    order (seed 0, so the split does not move with the run's seed); the first
    `pool_validation_size` of that order are the validation split and never served.

    Sources are brought to S×S (short side, centre crop), S = the smallest short side clipped
    to [32, 64]; S > 32 gives the ImageNet-RC recipe of random 32×32 crops with 4-pixel padding.
    """

    name = "images"

    def __init__(self, path: str, seed: int, split: str = "train") -> None:
        super().__init__(seed)
        what = f"outlier pool images:{path}"
        side = min(64, max(32, smallest_side(path, what)))
        images = load_image_set(path, side, what)
        order = np.random.default_rng(0).permutation(len(images))
        reserved = pool_validation_size(len(images))
        self.sources = images
        self.order = order[:reserved] if split == "validation" else order[reserved:]
        if len(self.order) == 0:
            raise DatasetNotFoundError(f"{what}: too few images to hold a {split} split")

    def _source(self, indices: np.ndarray) -> np.ndarray:
        return self.sources[self.order[indices % len(self.order)]]


@register_pool("images")
def image_file_pool(path: str | None = None, seed: int = 0) -> OutlierPool:
    if not path:
        raise DatasetNotFoundError(
            "outlier pool 'images' needs --pool_path pointing to a folder or .zip of images"
        )
    return ImageFilePool(path, seed)


@register_pool("imagenet_rc")
def imagenet_rc(path: str | None = None, seed: int = 0) -> OutlierPool:
    if not path or not os.path.isdir(path):
        raise DatasetNotFoundError(
            f"outlier pool 'imagenet_rc' needs --pool_path pointing to a folder of "
            f"Imagenet64_train batches (train_data_batch_1..10); got {path!r}"
        )
    return ImageNetRC(path, seed)
