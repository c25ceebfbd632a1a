"""The CAM baseline (Zhou et al., CVPR 2016) with the same classifier f.

Every table of the paper has a CAM row; it is boxed with the same rule as g's maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wsol.models import Classifier


@torch.no_grad()
def class_activation_maps(
    classifier: Classifier, images: torch.Tensor, class_indices: torch.Tensor
) -> torch.Tensor:
    """CAM for the given classes (normally the ground truth's), upsampled and normalised.

    images (B,3,H,W), normalised as f expects; class_indices (B,) int64.
    Returns (B,H,W) float in [0,1]: the FC-weighted sum of the last feature maps,
    bilinearly upsampled to H,W, then min-max normalised per image, as wsolevaluation's
    normalize_scoremap does (no clipping of negative evidence; a constant map becomes all
    zeros).
    """
    features = classifier.features(images)
    weights = classifier.fc.weight[class_indices]
    cams = torch.einsum("bk,bkhw->bhw", weights, features)
    cams = F.interpolate(
        cams[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False
    )[:, 0]
    flat = cams.flatten(1)
    low = flat.min(dim=1).values[:, None, None]
    span = (flat.max(dim=1).values[:, None, None] - low).clamp(min=1e-12)
    normalised = (cams - low) / span
    return torch.where(span > 1e-12, normalised, torch.zeros_like(normalised)).clamp(0, 1)
