"""Diagnostic only (issue 14): the `shapes` kind with one axis of its generator removed,
by monkeypatching wsol.data.synthetic, to find what keeps a from-scratch f at chance.

    PYTHONPATH=$PWD python benchmarks/cpu_recipe_clutter_variant.py noblobs|plaintex OUT

noblobs: background = the colour gradient only (no plain polygons, no lines).
plaintex: every object plain-coloured (no stripes, checks or gradient texture).
10 classes x (100 train + 50 test), 96 px, seed 0, as the recipe probes.

The recorded plaintex result (cpu_recipe.md) predates the shape kinds' own clutter
(wsol.data.synthetic.shape_clutter): it had the ``stripes`` kind's polygon clutter, which
the shape kinds no longer draw; noblobs writes the same images as before.
"""

import sys

import numpy as np

import wsol.data.synthetic as S

variant, out = sys.argv[1], sys.argv[2]
if variant == "noblobs":

    def _background(rng, size, grid):
        first, second = S._random_colour(rng), S._random_colour(rng)
        direction = rng.uniform(0.0, 2.0 * np.pi)
        ramp = (grid[0] * np.cos(direction) + grid[1] * np.sin(direction)) / size
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-9)
        canvas = first + (second - first) * ramp[..., None]
        return np.ascontiguousarray(canvas.astype(np.uint8))

    S._background = _background
    S._shape_background = _background  # the shape kinds' own since issue 14's fix
elif variant == "plaintex":

    def _random_texture(rng, size, grid):
        dark, _light = S._contrasting_colours(rng, min_difference=60.0)
        return np.broadcast_to(dark, (size, size, 3)).astype(np.float32)

    S._random_texture = _random_texture
S.synthesize_cub(
    out,
    num_classes=10,
    train_per_class=100,
    test_per_class=50,
    image_size=96,
    seed=0,
    kind="shapes",
)
