"""Miniature copies of the real datasets, in their exact official layouts (the .mat files
written with scipy.io.savemat, as MATLAB would store them), for the reader and check tests.

Each ``write_*`` returns the dataset folder; the module constants say what was written so
tests compare what a reader gives with them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from scipy.io import savemat

WIDTH, HEIGHT = 32, 24  # every miniature image (Tiny-ImageNet's are 64 x 64 for real)


def write_image(path: Path, seed: int, width: int = WIDTH, height: int = HEIGHT) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)


def replace_line(path: Path, line_number: int, new_line: str) -> None:
    lines = path.read_text().splitlines()
    lines[line_number - 1] = new_line
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- Stanford Cars

CARS_CLASSES = ("AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi R8 Coupe 2012")
# (fname, class id 1-based, (bbox_x1, bbox_y1, bbox_x2, bbox_y2) 1-based inclusive)
CARS_TRAIN = [(f"{k + 1:05d}.jpg", k % 3 + 1, (1 + k % 4, 2, 20 + k % 4, 24)) for k in range(9)]
CARS_TEST = [(f"{k + 1:05d}.jpg", k % 3 + 1, (3, 1, 32, 10 + k)) for k in range(3)]


def cars_annotations(rows: list[tuple[str, int, tuple[int, int, int, int]]]) -> np.ndarray:
    """A 1 x N MATLAB struct array with the devkit's fields, each value an uint8/uint16
    matrix or a char array, as in cars_train_annos.mat."""
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    annotations = np.zeros((1, len(rows)), dtype=[(name, "O") for name in fields])
    for index, (fname, class_id, box) in enumerate(rows):
        for name, value in zip(fields[:4], box, strict=True):
            annotations[0, index][name] = np.array([[value]], dtype=np.uint16)
        annotations[0, index]["class"] = np.array([[class_id]], dtype=np.uint8)
        annotations[0, index]["fname"] = np.array([fname])
    return annotations


def write_cars(root: Path) -> Path:
    """devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat
    (at the root, where torchvision puts it), cars_train/, cars_test/."""
    (root / "devkit").mkdir(parents=True)
    names = np.empty((1, len(CARS_CLASSES)), dtype=object)
    names[0, :] = CARS_CLASSES
    savemat(root / "devkit" / "cars_meta.mat", {"class_names": names})
    savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": cars_annotations(CARS_TRAIN)})
    savemat(root / "cars_test_annos_withlabels.mat", {"annotations": cars_annotations(CARS_TEST)})
    for folder, rows in (("cars_train", CARS_TRAIN), ("cars_test", CARS_TEST)):
        for seed, (fname, _, _) in enumerate(rows):
            write_image(root / folder / fname, seed)
    return root


# --------------------------------------------------------------------------- Oxford Flowers

FLOWERS_LABELS = [1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 3]  # image k has class LABELS[k - 1]
FLOWERS_SPLITS = {"trnid": [1, 2, 3, 4, 5, 6], "valid": [7, 8, 9], "tstid": [10, 11, 12, 13]}
FLOWERS_SIZE = (48, 32)  # width, height: multiples of 16, so JPEG blocks match the object
# The flower of image k: the 0-based inclusive rectangle (x0, y0, x1, y1), 16-px aligned.
FLOWERS_OBJECTS = {
    k: ((k % 2) * 16, 0, (k % 2) * 16 + 15 + 16 * (k % 3 == 0), 15) for k in range(1, 14)
}


def write_flowers(root: Path) -> Path:
    """jpg/image_%05d.jpg, imagelabels.mat (labels), setid.mat (trnid, valid, tstid) and
    segmim/segmim_%05d.jpg: the image with its background painted pure blue."""
    width, height = FLOWERS_SIZE
    for k in range(1, len(FLOWERS_LABELS) + 1):
        write_image(root / "jpg" / f"image_{k:05d}.jpg", k, width, height)
        segmentation = np.zeros((height, width, 3), np.uint8)
        segmentation[:] = (255, 0, 0)  # BGR: pure blue
        x0, y0, x1, y1 = FLOWERS_OBJECTS[k]
        segmentation[y0 : y1 + 1, x0 : x1 + 1] = (40, 200, 230)  # a yellow flower
        (root / "segmim").mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / "segmim" / f"segmim_{k:05d}.jpg"), segmentation)
    savemat(root / "imagelabels.mat", {"labels": np.array([FLOWERS_LABELS], dtype=np.uint8)})
    savemat(
        root / "setid.mat",
        {name: np.array([ids], dtype=np.uint16) for name, ids in FLOWERS_SPLITS.items()},
    )
    return root


# --------------------------------------------------------------------------- Tiny-ImageNet

TINY_WNIDS = ("n01443537", "n01629819", "n01641577")
TINY_WORDS = {
    "n00001740": "entity",
    "n01443537": "goldfish, Carassius auratus",
    "n01629819": "European fire salamander, Salamandra salamandra",
    "n01641577": "bullfrog, Rana catesbeiana",
}
TINY_SIZE = 16  # the real images are 64 x 64
TINY_TRAIN_PER_CLASS = 4
# val image k: (wnid, box x0 y0 x1 y1 inclusive 0-based)
TINY_VAL = [(TINY_WNIDS[k % 3], (k, 1, 15 - k % 2, 14)) for k in range(6)]


def tiny_train_box(label: int, k: int) -> tuple[int, int, int, int]:
    return (label, k, 10 + k, 15)


def write_tinyimagenet(root: Path) -> Path:
    """wnids.txt, words.txt, train/<wnid>/images/ with <wnid>_boxes.txt,
    val/images/ with val/val_annotations.txt (tab separated), test/images/."""
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("".join(f"{wnid}\n" for wnid in TINY_WNIDS))
    (root / "words.txt").write_text("".join(f"{w}\t{n}\n" for w, n in TINY_WORDS.items()))
    for label, wnid in enumerate(TINY_WNIDS):
        lines = []
        for k in range(TINY_TRAIN_PER_CLASS):
            name = f"{wnid}_{k}.JPEG"
            write_image(
                root / "train" / wnid / "images" / name, 10 * label + k, TINY_SIZE, TINY_SIZE
            )
            lines.append("\t".join([name, *map(str, tiny_train_box(label, k))]))
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("\n".join(lines) + "\n")
    lines = []
    for k, (wnid, box) in enumerate(TINY_VAL):
        write_image(root / "val" / "images" / f"val_{k}.JPEG", 100 + k, TINY_SIZE, TINY_SIZE)
        lines.append("\t".join([f"val_{k}.JPEG", wnid, *map(str, box)]))
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    write_image(root / "test" / "images" / "test_0.JPEG", 999, TINY_SIZE, TINY_SIZE)
    return root


# --------------------------------------------------------------------------- wsolevaluation

WSOL_CUB_CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross")
# split -> [(image id, label, [boxes (x0, y0, x1, y1) inclusive])]
WSOL_CUB = {
    "train": [
        (
            f"{WSOL_CUB_CLASSES[k % 2]}/{WSOL_CUB_CLASSES[k % 2][4:]}_{k:04d}.jpg",
            k % 2,
            [(k, 2, 20, 20)],
        )
        for k in range(6)
    ],
    "val": [
        (f"{WSOL_CUB_CLASSES[k % 2]}/4{k}0731611{k}.jpg", k % 2, [(1, 1, 30, 22)]) for k in range(4)
    ],
    "test": [
        (
            f"{WSOL_CUB_CLASSES[k % 2]}/{WSOL_CUB_CLASSES[k % 2][4:]}_9{k:03d}.jpg",
            k % 2,
            [(0, 0, 31, 23), (4, 4, 8, 8)],
        )
        for k in range(4)
    ],
}


def write_metadata(
    folder: Path, rows: list[tuple[str, int]], localization: list[str] | None, sizes: bool
) -> None:
    folder.mkdir(parents=True)
    (folder / "image_ids.txt").write_text("".join(f"{image_id}\n" for image_id, _ in rows))
    (folder / "class_labels.txt").write_text("".join(f"{i},{label}\n" for i, label in rows))
    if sizes:
        (folder / "image_sizes.txt").write_text("".join(f"{i},{WIDTH},{HEIGHT}\n" for i, _ in rows))
    if localization is not None:
        (folder / "localization.txt").write_text("".join(f"{line}\n" for line in localization))


def write_wsolbench_cub(root: Path) -> Path:
    """metadata/CUB/{train,val,test}/{image_ids,class_labels,image_sizes,localization}.txt
    and the images under dataset/CUB/<image id>, as wsolevaluation's scripts leave them."""
    for split, rows in WSOL_CUB.items():
        localization = [
            f"{i},{x0},{y0},{x1},{y1}" for i, _, boxes in rows for x0, y0, x1, y1 in boxes
        ]
        write_metadata(
            root / "metadata" / "CUB" / split,
            [(i, label) for i, label, _ in rows],
            localization,
            True,
        )
        for seed, (image_id, _, _) in enumerate(rows):
            write_image(root / "dataset" / "CUB" / image_id, seed)
    return root


OPENIMAGES_CLASSES = ("0bt_c3", "0by6g")
OPENIMAGES_TRAIN = [
    (f"train/{OPENIMAGES_CLASSES[k % 2]}/0a9b7df4d832ba{k:02d}.jpg", k % 2) for k in range(4)
]
# val / test image -> its instance masks' foreground rectangles (x0, y0, x1, y1)
OPENIMAGES_MASKS = {
    "val": {
        "val/0bt_c3/1cd9ac0169ec7df0.jpg": [(2, 2, 9, 9)],
        "val/0by6g/3a29f0b33894d4a6.jpg": [(0, 0, 5, 5), (20, 10, 31, 23)],
    },
    "test": {
        "test/0bt_c3/0a51958fcd523ae4.jpg": [(4, 4, 12, 12)],
        "test/0by6g/0a51958fcd523ae5.jpg": [(1, 3, 7, 8)],
    },
}


def write_wsolbench_openimages(root: Path) -> Path:
    """metadata/OpenImages/train (image_ids, class_labels only, as released) and val, test
    with localization.txt lines '<image>,<mask>,<ignore>'; images, instance masks and
    ignore masks under dataset/OpenImages/."""
    images = root / "dataset" / "OpenImages"
    write_metadata(root / "metadata" / "OpenImages" / "train", OPENIMAGES_TRAIN, None, False)
    for seed, (image_id, _) in enumerate(OPENIMAGES_TRAIN):
        write_image(images / image_id, seed)
    for split, masks in OPENIMAGES_MASKS.items():
        rows, localization = [], []
        for seed, (image_id, rectangles) in enumerate(masks.items()):
            label = OPENIMAGES_CLASSES.index(image_id.split("/")[1])
            rows.append((image_id, label))
            write_image(images / image_id, 50 + seed)
            stem = image_id[: -len(".jpg")]
            ignore = f"{stem}_ignore.png"
            assert cv2.imwrite(str(images / ignore), np.zeros((HEIGHT, WIDTH), np.uint8))
            for number, (x0, y0, x1, y1) in enumerate(rectangles):
                mask = np.zeros((HEIGHT, WIDTH), np.uint8)
                mask[y0 : y1 + 1, x0 : x1 + 1] = 255
                mask_path = f"{stem}_m{number}.png"
                assert cv2.imwrite(str(images / mask_path), mask)
                localization.append(f"{image_id},{mask_path},{ignore if number == 0 else ''}")
        write_metadata(root / "metadata" / "OpenImages" / split, rows, localization, False)
    return root
