"""The decoded-image cache: every image decoded and resized once, shared by a node.

Without it, :class:`~wsol.data.dataset.WsolDataset` decodes each JPEG and resizes it every
epoch, in every trial: a study of T trials of E epochs pays N x E x T decodes. With
``data.cache: true`` the first process that needs a split decodes and resizes its N
images once (:meth:`~wsol.data.transforms.WsolTransform.resize_sample`, the transform's
deterministic first stage) into uint8 arrays in ``.npy`` files under the cache folder
(``data.cache_dir``; default ``$WSOL_CACHE_DIR`` or ``~/.cache/wsol-study/decoded-images``).
Every later epoch, trial and study on the node memory-maps the same files: the operating
system keeps one copy of the pixels in its page cache for all processes, and only the
random crop and flip (:meth:`~wsol.data.transforms.WsolTransform.crop_and_flip`, the same
code as without the cache) run per item. Items are identical to the decoded ones (tests
compare them, boxes and masks included).

A cache is named by the content it holds: the resize and, per sample, its image id, label,
boxes, file paths, sizes and modification times (:func:`cache_key`). A changed image or
annotation therefore gets a new cache; stale ones are never read (delete the folder to
reclaim the space). Concurrent trials that start together build it once: a file lock
serialises builders, and a cache becomes visible only when complete (built in a scratch
folder, then renamed).

Layout of ``<cache_dir>/r<resize>-<key>/``::

    meta.json      version, resize, count, image ids
    images.npy     uint8 (N, R, R, 3) RGB
    masks.npy      bool (N, R, R) (only when some sample has a mask)
    has_mask.npy   bool (N,)
    boxes.npy      int64 (M, 4) inclusive boxes in resized pixels, all samples concatenated
    box_offsets.npy  int64 (N + 1,): sample i's boxes are boxes[offsets[i]:offsets[i+1]]
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from wsol.compute import available_cpus
from wsol.data.dataset import Sample, load_sample
from wsol.data.transforms import WsolTransform

CACHE_VERSION = 1
CACHE_DIR_ENV = "WSOL_CACHE_DIR"
_META = "meta.json"


def default_cache_dir() -> Path:
    """``$WSOL_CACHE_DIR`` if set, else ``~/.cache/wsol-study/decoded-images``."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "wsol-study" / "decoded-images"


def _file_identity(path: Path) -> list[Any]:
    try:
        status = path.stat()
    except OSError:
        # A missing file is reported by the build, naming it; the key just must not crash.
        return [str(path), None, None]
    return [str(path), status.st_size, status.st_mtime_ns]


def cache_key(samples: Sequence[Sample], resize: int) -> str:
    """Content hash (24 hex chars of sha256) of what a cache of ``samples`` at ``resize``
    holds: the resize, and per sample its id, label, boxes, mask encoding, and the path,
    size and modification time of its image and mask files."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": CACHE_VERSION, "resize": resize}).encode())
    for sample in samples:
        record = [
            sample.image_id,
            sample.label,
            [list(box) for box in sample.boxes],
            sample.mask_encoding,
            _file_identity(Path(sample.image_path).absolute()),
            [_file_identity(Path(path).absolute()) for path in sample.mask_paths],
        ]
        digest.update(json.dumps(record).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:24]


class DecodedImageCache:
    """A built cache folder, memory-mapped on first use in each process.

    :meth:`item` gives sample ``i`` as :meth:`WsolTransform.resize_sample` would: (R x R
    x 3 uint8 image, (N,4) int64 boxes, R x R bool mask or None); the arrays are
    read-only views of the mapped files. Pickling (e.g. into DataLoader workers) carries
    only the folder; each process maps the files itself.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / _META
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as error:
            raise ValueError(
                f"{self.directory} is not a complete decoded-image cache: {error}"
            ) from None
        if meta.get("version") != CACHE_VERSION:
            raise ValueError(
                f"decoded-image cache {self.directory} has version {meta.get('version')}, "
                f"expected {CACHE_VERSION}; delete the folder"
            )
        self.resize: int = int(meta["resize"])
        self.image_ids: list[str] = list(meta["image_ids"])
        self._arrays: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}

    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            arrays = {}
            for name in ("images", "masks", "has_mask", "boxes", "box_offsets"):
                path = self.directory / f"{name}.npy"
                if path.is_file():
                    arrays[name] = np.load(path, mmap_mode="r")
            self._arrays = arrays
        return self._arrays

    @property
    def nbytes(self) -> int:
        """Bytes on disk of the arrays."""
        return sum(path.stat().st_size for path in self.directory.glob("*.npy"))

    def item(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        arrays = self._open()
        start, stop = (int(v) for v in arrays["box_offsets"][index : index + 2])
        boxes = np.array(arrays["boxes"][start:stop], dtype=np.int64).reshape(-1, 4)
        mask = arrays["masks"][index] if bool(arrays["has_mask"][index]) else None
        return arrays["images"][index], boxes, mask

    def check_matches(self, samples: Sequence[Sample], resize: int) -> None:
        """Refuse a cache built for other samples or another resize."""
        if resize != self.resize:
            raise ValueError(
                f"decoded-image cache {self.directory} holds images resized to {self.resize} "
                f"px, but the transform resizes to {resize} px"
            )
        ids = [sample.image_id for sample in samples]
        if ids != self.image_ids:
            raise ValueError(
                f"decoded-image cache {self.directory} holds {len(self.image_ids)} other "
                f"samples than the {len(ids)} given (or in another order)"
            )


def _complete(directory: Path) -> bool:
    return (directory / _META).is_file()


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def build_decoded_cache(
    samples: Sequence[Sample], resize: int, directory: Path, *, threads: int | None = None
) -> DecodedImageCache:
    """Decode and resize ``samples`` into a new cache folder ``directory`` (must not exist).

    Decoding runs on ``threads`` threads (OpenCV releases the GIL; default: the CPUs this
    process may use, at most 8). A missing or corrupt file raises DatasetError naming it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True)
    count = len(samples)
    resizer = WsolTransform(resize, resize, train=False)
    images = np.lib.format.open_memmap(
        directory / "images.npy", mode="w+", dtype=np.uint8, shape=(count, resize, resize, 3)
    )
    any_mask = any(sample.mask_path is not None for sample in samples)
    masks = (
        np.lib.format.open_memmap(
            directory / "masks.npy", mode="w+", dtype=np.bool_, shape=(count, resize, resize)
        )
        if any_mask
        else None
    )
    has_mask = np.zeros(count, dtype=np.bool_)
    boxes: list[np.ndarray] = []

    def decode(sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return resizer.resize_sample(*load_sample(sample))

    workers = threads or min(8, available_cpus())
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for index, (image, sample_boxes, mask) in enumerate(pool.map(decode, samples)):
            images[index] = image
            boxes.append(np.asarray(sample_boxes, dtype=np.int64).reshape(-1, 4))
            if mask is not None and masks is not None:
                masks[index] = mask
                has_mask[index] = True
    images.flush()
    del images
    if masks is not None:
        masks.flush()
        del masks
    offsets = np.zeros(count + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in boxes])
    np.save(directory / "has_mask.npy", has_mask)
    np.save(directory / "box_offsets.npy", offsets)
    np.save(
        directory / "boxes.npy",
        np.concatenate(boxes) if boxes else np.zeros((0, 4), dtype=np.int64),
    )
    meta = {
        "version": CACHE_VERSION,
        "resize": resize,
        "count": count,
        "image_ids": [sample.image_id for sample in samples],
    }
    (directory / _META).write_text(json.dumps(meta))
    return DecodedImageCache(directory)


def open_decoded_cache(
    samples: Sequence[Sample],
    resize: int,
    cache_dir: Path | None = None,
    *,
    log: Callable[[str], None] | None = None,
) -> DecodedImageCache | None:
    """The cache of ``samples`` at ``resize`` under ``cache_dir`` (default
    :func:`default_cache_dir`), built first if no process on this node has built it yet.

    Returns None for an empty sample list (nothing to cache). Processes that ask at the
    same time wait for one builder (a file lock) instead of decoding in parallel.
    """
    if not samples:
        return None
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = f"r{resize}-{cache_key(samples, resize)}"
    final = root / name
    if not _complete(final):
        root.mkdir(parents=True, exist_ok=True)
        with _lock(root / f"{name}.lock"):
            if not _complete(final):
                scratch = root / f"{name}.building-{os.getpid()}"
                shutil.rmtree(scratch, ignore_errors=True)
                if final.exists():  # an incomplete leftover of a killed builder
                    shutil.rmtree(final)
                if log is not None:
                    log(f"decoded-image cache: decoding {len(samples)} images into {final}")
                try:
                    build_decoded_cache(samples, resize, scratch)
                except BaseException:
                    shutil.rmtree(scratch, ignore_errors=True)
                    raise
                os.rename(scratch, final)
    cache = DecodedImageCache(final)
    cache.check_matches(samples, resize)
    return cache
