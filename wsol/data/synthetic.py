"""A seeded synthetic WSOL dataset written in exactly the CUB-200-2011 layout.

Each image shows one object on a cluttered background. The class is visible only in
the object's texture: stripes whose orientation (and, beyond four classes, period) is
the class. Everything else is drawn independently of the class: the object's shape
(ellipse, rectangle or triangle, rotated, 25-60 % of the side in each direction), its
position, its two stripe colours, the stripes' phase, and the background (a colour
gradient, plain-coloured ellipses/rectangles/triangles, a few lines, pixel noise; never
stripes). So a classifier has to look at the object, and the object's silhouette is an
exact ground-truth mask.

The stripe angle is that of the stripes' normal (0 degrees: vertical stripes). Class
angles lie in [0, 90] degrees and each image draws the angle's sign at random, so a
horizontal flip (angle -> -angle) never changes the class. With K classes
there are min(K, 4) orientations (0, 30, 60, 90 degrees for four) and ceil(K / 4)
stripe periods (about 7 % of the side, times 1.9 per further period band); each image
jitters its angle by up to 5 degrees and its period by up to 10 %.

Default size: 4 classes x (100 train + 30 test) images of 96 px, written in about a
second. At 72 px resize / 64 px crops with per-image standardisation, a from-scratch
ResNet18 (small-input stem, Adam 1e-3, batch 32) reaches about 95 % validation accuracy
after 4-6 epochs of about 5 s each on 2 CPU threads.

Files are written from per-image generators seeded by (seed, class, index), so the
same arguments give byte-identical files.

Kinds (``kind=``, ``wsol synth --kind``). The above is ``stripes``, the default, whose
output is byte-for-byte what it was before kinds existed. The other kinds put the class
in the object's *shape* and vary one axis each, so a recipe tuned on one kind can be
judged on the others:

- ``shapes``: each class is one fixed polygon (:func:`class_polygon`) that is not
  mirror-symmetric: its mirror image differs from it, and from every other class and
  its mirror, by at least ``MIN_SHAPE_DISTANCE`` (1 - IoU, best over rotations of
  +-``2 * SHAPE_TURN_DEG``), so a horizontal flip turns a class into an unseen shape.
  Each image turns it by up to ``SHAPE_TURN_DEG`` degrees and stretches it by up to
  ``SHAPE_STRETCH``; its longer side is 25-60 % of the image side. Colour and texture
  (plain, stripes of any angle and period, checks, a gradient; two random colours) are
  drawn per image, never from the class. The background is a colour gradient (as the
  ``stripes`` kind's) under clutter that is never a filled region (:func:`shape_clutter`:
  1-3 speckle clouds with irregular outlines), so nothing in it looks like a class
  object. (Until issue 14 it was the ``stripes`` kind's, whose plain
  ellipses, rectangles and triangles kept a from-scratch f at chance.)
- ``fragments``: as ``shapes``, and the clutter includes 2-4 fragments of *other*
  classes' shapes (30-60 % of such a shape, cut by a random straight line, recut while
  what shows is within MIN_SHAPE_DISTANCE of the whole shape), textured like objects,
  so a part of a shape is no evidence of its class. Fragments keep a gap of
  ``FRAGMENT_MARGIN`` of the side from the object and from each other (a fragment that
  touched the object would change its outline, which is the class).
- ``scale``: as ``shapes`` with the object's longer side 10-60 % of the image side.
- ``hard``: everything at once: fragments and 10-60 % scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal, get_args

import cv2
import numpy as np

from wsol.data.transforms import mask_bounding_box

MAX_ORIENTATIONS = 4
ANGLE_JITTER_DEG = 5.0
BASE_PERIOD_FRACTION = 0.07
PERIOD_BAND_RATIO = 1.9
OBJECT_SIZE_RANGE = (0.25, 0.6)
JPEG_QUALITY = 95

Progress = Callable[[int, int], None]

SyntheticKind = Literal["stripes", "shapes", "fragments", "scale", "hard"]
SYNTHETIC_KINDS: tuple[str, ...] = get_args(SyntheticKind)
DEFAULT_KIND = "stripes"

#: Shape kinds: the seed of the class polygons (fixed, so a class is the same shape in
#: every dataset, whatever its seed), their vertex count and radius range.
SHAPE_SEED = 20_111_431
SHAPE_VERTICES = 7
SHAPE_RADIUS_RANGE = (0.35, 1.0)
#: Per-image rotation (degrees, either way) and stretch of one axis (factor 1 +- this).
SHAPE_TURN_DEG = 20.0
SHAPE_STRETCH = 0.15
#: Least 1 - IoU between a class polygon and its mirror, another class's polygon or
#: that one's mirror, over relative rotations of +-2 * SHAPE_TURN_DEG.
MIN_SHAPE_DISTANCE = 0.3
_SHAPE_RASTER = 64
_SHAPE_TURN_STEP_DEG = 5.0
#: A fragment keeps this share of a shape's pixels.
FRAGMENT_SHARE_RANGE = (0.3, 0.6)
#: Least gap between a fragment and the object (or an earlier fragment), as a share of
#: the image side.
FRAGMENT_MARGIN = 0.03


def class_texture(class_index: int, num_classes: int) -> tuple[float, int]:
    """(stripe angle in degrees in [0, 90], period band) that identify ``class_index``."""
    orientations = min(num_classes, MAX_ORIENTATIONS)
    angle = 0.0 if orientations == 1 else 90.0 * (class_index % orientations) / (orientations - 1)
    return angle, class_index // orientations


def class_name(class_index: int, num_classes: int) -> str:
    """CUB-style class name, e.g. ``'002.Stripes_30deg'`` (``'_period2'`` for band 1)."""
    angle, band = class_texture(class_index, num_classes)
    suffix = f"_period{band + 1}" if num_classes > MAX_ORIENTATIONS else ""
    return f"{class_index + 1:03d}.Stripes_{round(angle):02d}deg{suffix}"


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=3).astype(np.float32)


def _luminance(colour: np.ndarray) -> float:
    return float(0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2])


def _contrasting_colours(rng: np.random.Generator, min_difference: float) -> tuple:
    while True:
        first, second = _random_colour(rng), _random_colour(rng)
        if abs(_luminance(first) - _luminance(second)) >= min_difference:
            return first, second


def _shape_polygon(rng: np.random.Generator) -> np.ndarray:
    """A class-agnostic shape outline (M,2) around the origin, unit-ish scale."""
    kind = int(rng.integers(0, 3))
    if kind == 0:  # ellipse
        t = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
        points = np.stack([np.cos(t), rng.uniform(0.5, 1.0) * np.sin(t)], axis=1)
    elif kind == 1:  # rectangle
        aspect = rng.uniform(0.5, 1.0)
        points = np.array([[-1, -aspect], [1, -aspect], [1, aspect], [-1, aspect]], float)
    else:  # triangle, corners at least 60 degrees apart on a circle
        gaps = rng.uniform(60.0, 150.0, size=3)
        gaps *= 360.0 / gaps.sum()
        t = np.deg2rad(np.cumsum(gaps))
        points = np.stack([np.cos(t), np.sin(t)], axis=1)
    turn = rng.uniform(0.0, np.pi)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    return points @ rotation.T


def _place(points: np.ndarray, width: float, height: float, left: float, top: float) -> np.ndarray:
    """Scale and shift ``points`` so their bounding box is width x height at (left, top)."""
    low, high = points.min(axis=0), points.max(axis=0)
    unit = (points - low) / np.maximum(high - low, 1e-9)
    return unit * np.array([width, height]) + np.array([left, top])


def _fill(canvas: np.ndarray, polygon: np.ndarray, colour: tuple | int) -> None:
    fixed = np.round(polygon * 16.0).astype(np.int32)  # 4 fractional bits for cv2
    cv2.fillPoly(canvas, [fixed], colour, lineType=cv2.LINE_8, shift=4)


def _gradient(rng: np.random.Generator, size: int, grid: np.ndarray) -> np.ndarray:
    """A (size, size, 3) uint8 linear ramp between two random colours in a random
    direction: every kind's background under its clutter."""
    first, second = _random_colour(rng), _random_colour(rng)
    direction = rng.uniform(0.0, 2.0 * np.pi)
    ramp = (grid[0] * np.cos(direction) + grid[1] * np.sin(direction)) / size
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-9)
    canvas = first + (second - first) * ramp[..., None]
    canvas = np.ascontiguousarray(canvas.astype(np.uint8))
    return canvas


def _background(rng: np.random.Generator, size: int, grid: np.ndarray) -> np.ndarray:
    """Gradient, plain blobs and lines: clutter that carries no class and no stripes."""
    canvas = _gradient(rng, size, grid)
    for _ in range(int(rng.integers(3, 9))):
        side = rng.uniform(0.08, 0.3, size=2) * size
        corner = rng.uniform(-0.1 * size, size - 0.5 * side)
        polygon = _place(_shape_polygon(rng), side[0], side[1], corner[0], corner[1])
        _fill(canvas, polygon, tuple(int(v) for v in _random_colour(rng)))
    for _ in range(int(rng.integers(1, 4))):
        start, end = rng.integers(0, size, size=(2, 2))
        colour = tuple(int(v) for v in _random_colour(rng))
        thickness = int(rng.integers(1, 3))
        cv2.line(
            canvas, tuple(int(v) for v in start), tuple(int(v) for v in end), colour, thickness
        )
    return canvas


def render_sample(
    rng: np.random.Generator, class_index: int, num_classes: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """One (size x size x 3 uint8 RGB image, size x size bool object mask) of the class."""
    grid = np.mgrid[0:size, 0:size].astype(np.float32)[::-1]  # (x, y)
    image = _background(rng, size, grid)

    width, height = rng.uniform(*OBJECT_SIZE_RANGE, size=2) * size
    left = rng.uniform(0.0, size - width)
    top = rng.uniform(0.0, size - height)
    polygon = _place(_shape_polygon(rng), width, height, left, top)
    mask_canvas = np.zeros((size, size), np.uint8)
    _fill(mask_canvas, polygon, 255)
    mask = mask_canvas > 0

    angle, band = class_texture(class_index, num_classes)
    angle += rng.uniform(-ANGLE_JITTER_DEG, ANGLE_JITTER_DEG)
    angle *= 1.0 if rng.random() < 0.5 else -1.0
    period = max(3.0, BASE_PERIOD_FRACTION * size) * PERIOD_BAND_RATIO**band
    period *= rng.uniform(0.9, 1.1)
    theta = math.radians(angle)
    across = grid[0] * math.cos(theta) + grid[1] * math.sin(theta)
    wave = np.sin(2.0 * np.pi * across / period + rng.uniform(0.0, 2.0 * np.pi))
    weight = np.clip(0.5 + 1.25 * wave, 0.0, 1.0)[..., None]
    dark, light = _contrasting_colours(rng, min_difference=70.0)
    texture = dark + (light - dark) * weight
    image[mask] = texture[mask].astype(np.uint8)

    noise = rng.normal(0.0, 5.0, size=image.shape)
    image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return image, mask


# --------------------------------------------------------------------------- shape kinds


@dataclass(frozen=True)
class ShapeKind:
    """How a shape kind draws an image: the object's longer side as a share of the image
    side, and how many fragments of other classes' shapes the clutter holds."""

    size_range: tuple[float, float]
    fragments: tuple[int, int]


SHAPE_KINDS: dict[str, ShapeKind] = {
    "shapes": ShapeKind(size_range=(0.25, 0.6), fragments=(0, 0)),
    "fragments": ShapeKind(size_range=(0.25, 0.6), fragments=(2, 4)),
    "scale": ShapeKind(size_range=(0.1, 0.6), fragments=(0, 0)),
    "hard": ShapeKind(size_range=(0.1, 0.6), fragments=(2, 4)),
}


def _turned(points: np.ndarray, degrees: float) -> np.ndarray:
    theta = math.radians(degrees)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return points @ rotation.T


def _polygon_centroid(points: np.ndarray) -> np.ndarray:
    """Area centroid of a simple polygon (shoelace formula)."""
    x, y = points[:, 0], points[:, 1]
    x_next, y_next = np.roll(x, -1), np.roll(y, -1)
    cross = x * y_next - x_next * y
    area = cross.sum() / 2.0
    return np.array([((x + x_next) * cross).sum(), ((y + y_next) * cross).sum()]) / (6.0 * area)


def shape_raster(points: np.ndarray, degrees: float = 0.0, mirror: bool = False) -> np.ndarray:
    """``points`` (a unit-RMS-radius polygon), mirrored left-right if asked, turned by
    ``degrees`` and drawn with its area centroid at the centre of a 64 x 64 bool mask."""
    placed = points * np.array([-1.0, 1.0]) if mirror else points
    placed = _turned(placed, degrees)
    placed = placed - _polygon_centroid(placed)
    canvas = np.zeros((_SHAPE_RASTER, _SHAPE_RASTER), np.uint8)
    _fill(canvas, placed * (0.22 * _SHAPE_RASTER) + _SHAPE_RASTER / 2.0, 1)
    return canvas.astype(bool)


def shape_distance(first: np.ndarray, second: np.ndarray, mirror: bool) -> float:
    """1 - the best IoU of ``first`` with ``second`` (mirrored if ``mirror``) turned by
    any multiple of 5 degrees within +-2 * SHAPE_TURN_DEG, centroids aligned."""
    reference = shape_raster(first)
    span = 2.0 * SHAPE_TURN_DEG
    best = 0.0
    for degrees in np.arange(-span, span + 1e-9, _SHAPE_TURN_STEP_DEG):
        other = shape_raster(second, float(degrees), mirror)
        best = max(best, float((reference & other).sum() / (reference | other).sum()))
    return 1.0 - best


def _candidate_polygon(rng: np.random.Generator) -> np.ndarray:
    """A star-shaped polygon (vertices at sorted random angles, random radii), centred on
    its area centroid, scaled to unit RMS vertex radius."""
    angles = np.sort(rng.uniform(0.0, 2.0 * np.pi, SHAPE_VERTICES))
    radii = rng.uniform(*SHAPE_RADIUS_RANGE, SHAPE_VERTICES)
    points = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    points = points - _polygon_centroid(points)
    return points / math.sqrt(float((points**2).sum(axis=1).mean()))


@cache
def _class_polygon_cached(class_index: int) -> np.ndarray:
    earlier = [class_polygon(k) for k in range(class_index)]
    rng = np.random.default_rng([SHAPE_SEED, class_index])
    while True:  # about two candidates per class (measured for 12 classes)
        candidate = _candidate_polygon(rng)
        if shape_distance(candidate, candidate, mirror=True) < MIN_SHAPE_DISTANCE:
            continue
        if all(
            shape_distance(candidate, other, mirror) >= MIN_SHAPE_DISTANCE
            for other in earlier
            for mirror in (False, True)
        ):
            candidate.setflags(write=False)
            return candidate


def class_polygon(class_index: int) -> np.ndarray:
    """The shape kinds' polygon (M,2) of class ``class_index``: unit RMS radius, centred,
    y down. Fixed by SHAPE_SEED and the class index alone (not the dataset's seed or
    class count), drawn until it is at least MIN_SHAPE_DISTANCE from its own mirror and
    from every earlier class's polygon and that one's mirror. Read-only."""
    if class_index < 0:
        raise ValueError(f"class_index must be >= 0, got {class_index}")
    return _class_polygon_cached(class_index)


def shape_class_name(class_index: int) -> str:
    """CUB-style class name of a shape kind, e.g. ``'003.Shape_03'``."""
    return f"{class_index + 1:03d}.Shape_{class_index + 1:02d}"


def _object_outline(rng: np.random.Generator, class_index: int, longer_side: float) -> np.ndarray:
    """The class polygon, stretched, turned and scaled so its longer side is
    ``longer_side`` px, with its bounding box's top-left corner at the origin."""
    stretch = np.array([rng.uniform(1.0 - SHAPE_STRETCH, 1.0 + SHAPE_STRETCH), 1.0])
    points = _turned(class_polygon(class_index) * stretch, rng.uniform(-1, 1) * SHAPE_TURN_DEG)
    points = points - points.min(axis=0)
    return points * (longer_side / max(float(points.max()), 1e-9))


def _random_texture(rng: np.random.Generator, size: int, grid: np.ndarray) -> np.ndarray:
    """A size x size x 3 float texture that carries no class: plain, stripes (any angle
    and period), checks or a gradient, in two random contrasting colours."""
    dark, light = _contrasting_colours(rng, min_difference=60.0)
    pattern = int(rng.integers(0, 4))
    if pattern == 0:
        return np.broadcast_to(dark, (size, size, 3)).astype(np.float32)
    theta = rng.uniform(0.0, np.pi)
    across = grid[0] * math.cos(theta) + grid[1] * math.sin(theta)
    period = rng.uniform(0.05, 0.2) * size
    if pattern == 1:
        weight = (np.sin(2.0 * np.pi * across / period + rng.uniform(0, 2 * np.pi)) > 0).astype(
            np.float32
        )
    elif pattern == 2:
        along = -grid[0] * math.sin(theta) + grid[1] * math.cos(theta)
        weight = ((np.floor(across / period) + np.floor(along / period)) % 2).astype(np.float32)
    else:
        weight = (across - across.min()) / max(float(np.ptp(across)), 1e-9)
    return dark + (light - dark) * weight[..., None]


def _paint(image: np.ndarray, region: np.ndarray, texture: np.ndarray) -> None:
    image[region] = texture[region].astype(np.uint8)


#: Shape kinds' background clutter (:func:`shape_clutter`): speckle clouds (sparse dots
#: inside an irregular outline, ``CLUTTER_CLOUD_SIDE`` of the side, dot density
#: ``CLUTTER_CLOUD_DENSITY``, below the 8-neighbour percolation threshold of about 0.41,
#: so the dots stay specks) and open strokes (lines, arcs of at most CLUTTER_ARC_MAX_DEG,
#: quadratic curves; at least ``CLUTTER_STROKE_MIN`` of the side long). Strokes are OFF
#: (count 0): measured with configs/cpu_recipe.yaml's f on ``shapes`` (10 classes, 30
#: epochs, seed 0; benchmarks/results/cpu_recipe_probes.jsonl), test top-1 was 61.2 %
#: with clouds only, 48.8 % with clouds and 3-6 one-pixel strokes, 13.4 % with clouds
#: and 3-6 strokes 1-3 px thick, 15.4 % with those strokes alone (15.2 % with the
#: ``stripes`` kind's polygon clutter, 81.8 % with none): strokes that meet the object change its
#: outline, and the class is in the outline.
CLUTTER_STROKES = (0, 0)
CLUTTER_STROKE_MIN = 0.2
CLUTTER_STROKE_THICKNESS = (1, 1)
CLUTTER_ARC_MAX_DEG = 270.0
CLUTTER_CLOUDS = (1, 3)
CLUTTER_CLOUD_SIDE = (0.15, 0.4)
CLUTTER_CLOUD_DENSITY = (0.15, 0.3)
_CLOUD_GRID = 6
#: Fragments are recut (up to this many times, then dropped) while their visible part is within
#: MIN_SHAPE_DISTANCE of the whole shape they were cut from (:func:`silhouette_distance`).
_FRAGMENT_TRIES = 8
_STROKE_TRIES = 16


def _stroke_once(rng: np.random.Generator, size: int) -> np.ndarray:
    """A straight line, a circular arc of 90-270 degrees or a quadratic Bezier curve,
    1-3 px thick, from a point in the image (the rest may leave it)."""
    canvas = np.zeros((size, size), np.uint8)
    thickness = int(rng.integers(CLUTTER_STROKE_THICKNESS[0], CLUTTER_STROKE_THICKNESS[1] + 1))
    pattern = int(rng.integers(0, 3))
    start = rng.uniform(0.1 * size, 0.9 * size, size=2)
    heading = rng.uniform(0.0, 2.0 * np.pi)
    reach = rng.uniform(CLUTTER_STROKE_MIN, 1.0) * size
    end = start + reach * np.array([math.cos(heading), math.sin(heading)])
    if pattern == 0:
        points = np.stack([start, end])
    elif pattern == 1:
        radii = rng.uniform(CLUTTER_STROKE_MIN / 1.5, 0.4, size=2) * size
        first = rng.uniform(0.0, 360.0)
        t = np.deg2rad(first + np.linspace(0.0, rng.uniform(90.0, CLUTTER_ARC_MAX_DEG), 48))
        points = start + np.stack([radii[0] * np.cos(t), radii[1] * np.sin(t)], axis=1)
    else:
        bend = rng.uniform(-0.6, 0.6) * reach
        normal = np.array([-math.sin(heading), math.cos(heading)])
        control = (start + end) / 2.0 + bend * normal
        t = np.linspace(0.0, 1.0, 48)[:, None]
        points = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
    fixed = np.round(points * 16.0).astype(np.int32)
    cv2.polylines(canvas, [fixed], False, 1, thickness, lineType=cv2.LINE_8, shift=4)
    return canvas.astype(bool)


def _stroke_region(rng: np.random.Generator, size: int) -> np.ndarray:
    """An open stroke (:func:`_stroke_once`) redrawn (up to _STROKE_TRIES times, then
    none is drawn) until every piece of it that shows spans at least CLUTTER_STROKE_MIN of
    the image side, so no stroke is a short thick stub (a small filled bar)."""
    for _ in range(_STROKE_TRIES):
        region = _stroke_once(rng, size)
        count, _, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), 8)
        spans = np.maximum(stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT])
        if count > 1 and spans.min() >= CLUTTER_STROKE_MIN * size:
            return region
    return np.zeros((size, size), bool)


def _cloud_region(rng: np.random.Generator, size: int) -> np.ndarray:
    """A speckle cloud: sparse single-pixel dots inside an irregular outline (smooth
    random noise under a radial falloff, thresholded) in a box 15-40 % of the side."""
    side = np.maximum(rng.uniform(*CLUTTER_CLOUD_SIDE, size=2) * size, 4.0).astype(int)
    coarse = rng.uniform(0.0, 1.0, size=(_CLOUD_GRID, _CLOUD_GRID)).astype(np.float32)
    field = cv2.resize(coarse, (int(side[0]), int(side[1])), interpolation=cv2.INTER_CUBIC)
    ys, xs = np.mgrid[0 : side[1], 0 : side[0]].astype(np.float32)
    radius = np.hypot((xs + 0.5) / side[0] - 0.5, (ys + 0.5) / side[1] - 0.5) * 2.0
    outline = (field * (1.0 - radius)) > rng.uniform(0.1, 0.25)
    local = outline & (rng.random(outline.shape) < rng.uniform(*CLUTTER_CLOUD_DENSITY))
    corner = rng.uniform(-0.1 * size, size - 0.5 * side).astype(int)
    region = np.zeros((size, size), bool)
    x0, y0 = max(int(corner[0]), 0), max(int(corner[1]), 0)
    x1, y1 = min(int(corner[0] + side[0]), size), min(int(corner[1] + side[1]), size)
    if x1 > x0 and y1 > y0:
        region[y0:y1, x0:x1] = local[
            y0 - corner[1] : y1 - corner[1], x0 - corner[0] : x1 - corner[0]
        ]
    return region


def shape_clutter(rng: np.random.Generator, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The shape kinds' background clutter, in drawing order: (size x size bool region,
    its RGB colour) per element: speckle clouds, then open strokes (lines, arcs,
    curves; none by default, see CLUTTER_STROKES), each a random colour. No element is
    a filled region, so none looks like a class object; the ``stripes`` kind's filled
    ellipses, rectangles and triangles did
    (any compact filled silhouette is within MIN_SHAPE_DISTANCE of a roundish class
    polygon, and a from-scratch f stayed at chance on them, benchmarks/results/
    cpu_recipe.md)."""
    elements = []
    for _ in range(int(rng.integers(CLUTTER_CLOUDS[0], CLUTTER_CLOUDS[1] + 1))):
        elements.append((_cloud_region(rng, size), _random_colour(rng)))
    for _ in range(int(rng.integers(CLUTTER_STROKES[0], CLUTTER_STROKES[1] + 1))):
        elements.append((_stroke_region(rng, size), _random_colour(rng)))
    return elements


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return abs(float((x * np.roll(y, -1) - np.roll(x, -1) * y).sum())) / 2.0


def silhouette_distance(mask: np.ndarray, class_index: int) -> float:
    """:func:`shape_distance` (no mirror) from class ``class_index``'s polygon to the
    outer outline of ``mask``'s largest 8-connected component, scaled to the polygon's
    area (so any size compares) with centroids aligned; 1.0 for an empty or degenerate
    mask. Below MIN_SHAPE_DISTANCE the silhouette is as close to the class as no other
    class is."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    if count < 2:
        return 1.0
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    contours, _ = cv2.findContours(
        (labels == largest).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
    )
    outline = max(contours, key=cv2.contourArea)[:, 0, :].astype(np.float64)
    if len(outline) < 3 or _polygon_area(outline) < 1.0:
        return 1.0
    reference = class_polygon(class_index)
    outline = outline - _polygon_centroid(outline)
    outline = outline * math.sqrt(_polygon_area(reference) / _polygon_area(outline))
    return shape_distance(reference, outline, mirror=False)


def _shape_background(rng: np.random.Generator, size: int, grid: np.ndarray) -> np.ndarray:
    """A colour gradient (as the ``stripes`` kind's) under :func:`shape_clutter`."""
    canvas = _gradient(rng, size, grid)
    for region, colour in shape_clutter(rng, size):
        canvas[region] = colour.astype(np.uint8)
    return canvas


def _fragment_region(
    rng: np.random.Generator, class_index: int, size: int, kind: ShapeKind, keep_clear: np.ndarray
) -> np.ndarray:
    """Part of another class's shape: the shape placed anywhere (partly outside the image
    too) where it does not touch ``keep_clear`` (size x size bool; up to
    _FRAGMENT_TRIES placements), and cut by a random straight line keeping 30-60 % of its
    pixels; the cut is redrawn (up to _FRAGMENT_TRIES times) while the visible part is
    within MIN_SHAPE_DISTANCE of the whole shape (:func:`silhouette_distance`). Empty
    when no placement or cut passes."""
    longer = rng.uniform(*kind.size_range) * size
    outline = _object_outline(rng, class_index, longer)
    region = np.zeros((size, size), bool)
    for _ in range(_FRAGMENT_TRIES):
        placed = outline + rng.uniform(-0.2 * longer, size - 0.8 * longer, size=2)
        canvas = np.zeros((size, size), np.uint8)
        _fill(canvas, placed, 1)
        if not (canvas.astype(bool) & keep_clear).any():
            break
    else:
        return region
    ys, xs = np.nonzero(canvas)
    if xs.size == 0:
        return region
    for _ in range(_FRAGMENT_TRIES):
        theta = rng.uniform(0.0, 2.0 * np.pi)
        projection = xs * math.cos(theta) + ys * math.sin(theta)
        cut = np.quantile(projection, rng.uniform(*FRAGMENT_SHARE_RANGE))
        region = np.zeros((size, size), bool)
        keep = projection <= cut
        region[ys[keep], xs[keep]] = True
        if silhouette_distance(region, class_index) >= MIN_SHAPE_DISTANCE:
            return region
    return np.zeros((size, size), bool)


def render_shape_sample(
    rng: np.random.Generator, class_index: int, num_classes: int, size: int, kind: str
) -> tuple[np.ndarray, np.ndarray]:
    """One (size x size x 3 uint8 RGB image, size x size bool object mask) of a shape
    ``kind`` (a key of SHAPE_KINDS): a gradient under :func:`shape_clutter`, fragments of other
    classes' shapes if the kind has them, then the class's shape in a random texture."""
    spec = SHAPE_KINDS[kind]
    grid = np.mgrid[0:size, 0:size].astype(np.float32)[::-1]  # (x, y)
    image = _shape_background(rng, size, grid)
    others = [k for k in range(num_classes) if k != class_index]
    count = int(rng.integers(spec.fragments[0], spec.fragments[1] + 1)) if others else 0

    outline = _object_outline(rng, class_index, rng.uniform(*spec.size_range) * size)
    extent = outline.max(axis=0)
    outline = outline + rng.uniform(0.0, 1.0, size=2) * np.maximum(size - 1.0 - extent, 0.0)
    mask_canvas = np.zeros((size, size), np.uint8)
    _fill(mask_canvas, outline, 255)
    mask = mask_canvas > 0
    # Fragments keep a margin from the object: one touching it would change the object's
    # outline, and the class is in the outline.
    margin = max(1, round(FRAGMENT_MARGIN * size))
    keep_clear = cv2.dilate(mask_canvas, np.ones((2 * margin + 1,) * 2, np.uint8)) > 0
    for _ in range(count):
        region = _fragment_region(rng, int(rng.choice(others)), size, spec, keep_clear)
        _paint(image, region, _random_texture(rng, size, grid))
        keep_clear |= region
    _paint(image, mask, _random_texture(rng, size, grid))

    noise = rng.normal(0.0, 5.0, size=image.shape)
    image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return image, mask


def kind_class_name(kind: str, class_index: int, num_classes: int) -> str:
    """The CUB-style name of class ``class_index`` in a dataset of ``kind``."""
    if kind == DEFAULT_KIND:
        return class_name(class_index, num_classes)
    return shape_class_name(class_index)


def render_kind_sample(
    rng: np.random.Generator, class_index: int, num_classes: int, size: int, kind: str
) -> tuple[np.ndarray, np.ndarray]:
    """One (image, mask) of ``kind``: :func:`render_sample` for ``stripes``, else
    :func:`render_shape_sample`."""
    if kind == DEFAULT_KIND:
        return render_sample(rng, class_index, num_classes, size)
    return render_shape_sample(rng, class_index, num_classes, size, kind)


def synthesize_cub(
    out: Path,
    num_classes: int = 4,
    train_per_class: int = 120,
    test_per_class: int = 40,
    image_size: int = 96,
    seed: int = 0,
    progress: Progress | None = None,
    kind: str = DEFAULT_KIND,
) -> Path:
    """Write the synthetic dataset to the new or empty folder ``out``; return ``out``.

    Layout: CUB-200-2011 (see :mod:`wsol.data.cub`): ``images/<NNN.Name>/<Name>_<NNNN>.jpg``
    (JPEG quality 95, image_size x image_size px), binary 0/255 PNG masks at the same
    relative path under ``segmentations/``, and the five text files; bounding_boxes.txt
    holds the tight box of each object's silhouette as x y width height, so it reads
    back as exactly the mask's inclusive bounding box. Per class, images 0 ..
    train_per_class - 1 are training images, the rest test images.
    ``kind`` is one of SYNTHETIC_KINDS (see the module docstring); the default,
    ``stripes``, writes what this function wrote before kinds existed, byte for byte.
    ``progress(done, total)`` is called after each image if given.
    """
    if kind not in SYNTHETIC_KINDS:
        raise ValueError(
            f"unknown synthetic kind {kind!r}; choose one of {', '.join(SYNTHETIC_KINDS)}"
        )
    if num_classes < 1 or train_per_class < 1 or test_per_class < 0:
        raise ValueError(
            "need num_classes >= 1, train_per_class >= 1, test_per_class >= 0; got "
            f"{num_classes}, {train_per_class}, {test_per_class}"
        )
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 px, got {image_size}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder; choose a new folder")
    per_class = train_per_class + test_per_class
    total = num_classes * per_class
    classes, images, labels, splits, boxes = [], [], [], [], []
    image_id = 0
    for class_index in range(num_classes):
        name = kind_class_name(kind, class_index, num_classes)
        classes.append(f"{class_index + 1} {name}")
        (out / "images" / name).mkdir(parents=True)
        (out / "segmentations" / name).mkdir(parents=True)
        short = name.split(".", 1)[1]
        for index in range(per_class):
            image_id += 1
            rng = np.random.default_rng([seed % 2**64, class_index, index])
            image, mask = render_kind_sample(rng, class_index, num_classes, image_size, kind)
            relative = f"{name}/{short}_{index:04d}.jpg"
            cv2.imwrite(
                str(out / "images" / relative),
                cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY],
            )
            cv2.imwrite(
                str(out / "segmentations" / Path(relative).with_suffix(".png")),
                mask.astype(np.uint8) * 255,
            )
            box = mask_bounding_box(mask)
            if box is None:  # cannot happen at >= 32 px; guards the box file's contract
                raise RuntimeError(f"empty object mask for {relative}")
            x0, y0, x1, y1 = box
            images.append(f"{image_id} {relative}")
            labels.append(f"{image_id} {class_index + 1}")
            splits.append(f"{image_id} {1 if index < train_per_class else 0}")
            boxes.append(f"{image_id} {x0:.1f} {y0:.1f} {x1 - x0 + 1:.1f} {y1 - y0 + 1:.1f}")
            if progress is not None:
                progress(image_id, total)
    for file_name, lines in (
        ("classes.txt", classes),
        ("images.txt", images),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", splits),
        ("bounding_boxes.txt", boxes),
    ):
        (out / file_name).write_text("\n".join(lines) + "\n")
    return out
