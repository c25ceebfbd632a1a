"""Networks: backbones, the classifier f, the Siamese embedding f (Method II), and the
mask generator g."""

from wsol.models.backbones import BACKBONE_NAMES, WeightsUnavailableError, build_resnet
from wsol.models.classifier import Classifier, freeze
from wsol.models.embedding import ClassMeansMissingError, EmbeddingNet, top1_classes
from wsol.models.mask_generator import MaskGenerator

__all__ = [
    "BACKBONE_NAMES",
    "ClassMeansMissingError",
    "Classifier",
    "EmbeddingNet",
    "MaskGenerator",
    "WeightsUnavailableError",
    "build_resnet",
    "freeze",
    "top1_classes",
]
