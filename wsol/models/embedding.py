"""The Siamese embedding network f of Method II: ResNet backbone, global average pool,
a linear projection of the pooled features (512-d for ResNet18/34) to ``embedding_dim``
(200 in the paper).

"Siamese" means the same network (shared weights) embeds the anchor, the positive and
the negative of a triplet; there is one module, applied three times.

Classification (our choice; the paper does not say how Method II classifies): an image's
class is that of the nearest class-mean embedding, the means taken over the training
split (centre crops) after f's training. The means are buffers of the module, so they
are saved and loaded with its state dict; :meth:`EmbeddingNet.class_logits` returns the
negative Euclidean distances to them, so ``argmax`` is the nearest mean, and
:func:`top1_classes` asks any reference network (softmax classifier or embedding) for
its top-1 class.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wsol.models.backbones import resnet_trunk


class ClassMeansMissingError(RuntimeError):
    """The embedding network was asked to classify before its class means were set."""


class EmbeddingNet(nn.Module):
    """f of Method II: images (B,3,H,W), already normalised -> embeddings (B, embedding_dim).

    ``features`` gives the last feature map (B,K,h,w), as :class:`Classifier` does.
    ``normalize``: scale each embedding to unit L2 norm (not in the paper, which does not
    normalise; an option for from-scratch training, where unnormalised embeddings can
    shrink towards one point and sit at loss = margin).
    ``batchnorm``: a BatchNorm1d on the projection's output, before the normalisation (not
    in the paper; "BNNeck", Luo et al. 2019). In training every embedding dimension has
    zero mean and unit variance over the batch, so the batch's embeddings cannot all sit at
    one point; in eval mode it is a fixed affine map (its running statistics).
    ``class_proxies``: a learned (num_classes, embedding_dim) parameter, one direction a
    class, for ``classifier.embedding_loss: normalized_softmax`` (ours; the loss is
    :func:`wsol.losses.normalized_softmax_loss`); None otherwise. Only f's training reads
    it: classification and g's losses use the embedding and the class means.
    ``class_means`` (num_classes, embedding_dim) and ``class_counts`` (num_classes,) are
    buffers filled by :meth:`set_class_means`; until then ``class_counts`` is all zero and
    :meth:`class_logits` raises :class:`ClassMeansMissingError`.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int = 200,
        backbone: str = "resnet18",
        pretrained: bool = False,
        weights_path: Path | None = None,
        small_input_stem: bool = False,
        normalize: bool = False,
        width: float = 1.0,
        batchnorm: bool = False,
        class_proxies: bool = False,
    ) -> None:
        super().__init__()
        self.stem, self.body, self.feature_dim = resnet_trunk(
            backbone, pretrained, weights_path, small_input_stem, width
        )
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes
        self.normalize = normalize
        self.projection = nn.Linear(self.feature_dim, embedding_dim)
        # Only when asked, so the state dicts of f's without it are unchanged.
        self.embedding_norm = nn.BatchNorm1d(embedding_dim) if batchnorm else None
        self.class_proxies = (
            nn.Parameter(torch.randn(num_classes, embedding_dim)) if class_proxies else None
        )
        self.register_buffer("class_means", torch.zeros(num_classes, embedding_dim))
        self.register_buffer("class_counts", torch.zeros(num_classes, dtype=torch.int64))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.stem(images))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) normalised images -> (B, embedding_dim) embeddings; unit length when
        the network was built with ``normalize=True`` (ours, not the paper's)."""
        embeddings = self.projection(self.features(images).mean(dim=(2, 3)))
        if self.embedding_norm is not None:
            embeddings = self.embedding_norm(embeddings)
        return F.normalize(embeddings, dim=1) if self.normalize else embeddings

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)

    @property
    def has_class_means(self) -> bool:
        return bool((self.class_counts > 0).any())

    @torch.no_grad()
    def set_class_means(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Store the mean embedding of each class: embeddings (N, D), labels (N,) int.

        A class with no embedding keeps count 0 and is never predicted.
        """
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_dim:
            raise ValueError(
                f"expected embeddings (N, {self.embedding_dim}), got {tuple(embeddings.shape)}"
            )
        if len(labels) != len(embeddings):
            raise ValueError(f"{len(labels)} labels for {len(embeddings)} embeddings")
        labels = labels.to(self.class_means.device, torch.int64)
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes - 1}]")
        sums = torch.zeros_like(self.class_means)
        sums.index_add_(0, labels, embeddings.to(sums))
        counts = torch.bincount(labels, minlength=self.num_classes)
        self.class_counts.copy_(counts)
        self.class_means.copy_(sums / counts.clamp_min(1).unsqueeze(1).to(sums))

    def logits_from_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, D) embeddings -> (B, num_classes): minus the Euclidean distance to each class
        mean (-inf for a class without training images)."""
        if not self.has_class_means:
            raise ClassMeansMissingError(
                "the embedding network has no class means yet: they are set from the "
                "training split after (and during) its training; train it with "
                "wsol.loop.train_classifier or load a saved one"
            )
        distances = torch.cdist(embeddings, self.class_means.to(embeddings))
        return (-distances).masked_fill(self.class_counts.unsqueeze(0) == 0, float("-inf"))

    def class_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits-like class scores of normalised images (B, num_classes): argmax is the
        nearest class-mean embedding."""
        return self.logits_from_embeddings(self.embed(images))

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Top-1 class (B,) int64 of normalised images: the nearest class mean."""
        return self.class_logits(images).argmax(dim=1)


def top1_classes(network: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The top-1 class (B,) of normalised images by any reference network f: the argmax
    of a softmax classifier's logits, or the nearest class mean of an :class:`EmbeddingNet`.
    """
    if isinstance(network, EmbeddingNet):
        return network.predict(images)
    return network(images).argmax(dim=1)
