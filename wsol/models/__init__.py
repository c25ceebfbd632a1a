"""Networks: backbones, the classifier f and the mask generator g."""

from wsol.models.backbones import BACKBONE_NAMES, WeightsUnavailableError, build_resnet
from wsol.models.classifier import Classifier, freeze
from wsol.models.mask_generator import MaskGenerator

__all__ = [
    "BACKBONE_NAMES",
    "Classifier",
    "MaskGenerator",
    "WeightsUnavailableError",
    "build_resnet",
    "freeze",
]
