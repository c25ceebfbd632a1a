"""Method I and Method II: what differs between them, and nothing else.

Each method is a class with the same few methods, which the loops in :mod:`wsol.loop`
call without ever asking which method they run:

- f: ``build_f``, ``f_batches`` (one epoch's training batches), ``f_step`` (one
  optimiser step), ``f_validate`` (``val_top1_cls``, ``val_loss``);
- g: ``check_g_loss``, ``g_batches``, ``g_step``, ``g_validation`` (an accumulator of
  the loss terms over one validation pass).

Method I (Eq. 1): f is a softmax classifier trained with CE; g minimises
CE(f(I), f(I*M)) + lambda * R(M). Method II (Eq. 2-4): f is a Siamese embedding trained
with the triplet loss (or, ``classifier.embedding_loss: normalized_softmax``, a cosine
softmax over class proxies); g minimises L_inner + L_outer + lambda * R(M_a) over triplets.
``mask.method`` picks one (:func:`method_of`); f's kind follows from it.

The single steps are module functions too (:func:`classifier_train_step`,
:func:`embedding_train_step`, :func:`embedding_batch_hard_step`,
:func:`embedding_softmax_step`, :func:`method1_train_step`, :func:`method2_train_step`),
so benchmarks and tests can time and check one step alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsol.compute import Runtime
from wsol.config import ClassifierConfig, ConfigError, MaskConfig, RunConfig
from wsol.data import TrainingSplits, WsolDataset, make_dataset
from wsol.data.transforms import normalize
from wsol.loaders import make_batch_loader, make_eval_loader, make_loader, make_triplet_loader
from wsol.losses import (
    LossTerms,
    Method2Terms,
    batch_hard_triplet_loss,
    method1_loss,
    method2_loss,
    method2_total,
    normalized_softmax_loss,
    triplet_loss,
    triplet_losses,
    weighted_input,
)
from wsol.models import Classifier, EmbeddingNet, MaskGenerator
from wsol.triplets import (
    TRIPLET_ROLES,
    ClassBalancedBatches,
    TripletSampler,
    validation_triplets,
)

#: Images per batch of f's validation passes (memory only: the metrics do not depend on it).
F_EVAL_BATCH = 64


def build_mask_generator(config: MaskConfig) -> MaskGenerator:
    """g as ``mask`` configures it (encoder, width, final norm, init); the same for both methods."""
    return MaskGenerator(
        config.encoder, config.pretrained, config.weights_path, config.width, config.final_norm
    )


# --------------------------------------------------------------------------- single steps


def _descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def classifier_train_step(
    classifier: Classifier,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    normalization: str,
    runtime: Runtime,
) -> torch.Tensor:
    """One f step of Method I: CE of f's logits on a batch (images (B,3,H,W) in [0,1]),
    backward, optimizer step, under ``runtime``'s placement and precision. Returns the
    loss (detached, on the device: reading it is left to the caller, once per epoch)."""
    images = runtime.images(images)
    labels = labels.to(runtime.device, non_blocking=runtime.pin_memory)
    with runtime.autocast():
        logits = classifier(normalize(images, normalization))
    loss = F.cross_entropy(logits.float(), labels)
    _descend(optimizer, loss)
    return loss.detach()


def embedding_train_step(
    network: EmbeddingNet,
    optimizer: torch.optim.Optimizer,
    triplet: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    normalization: str,
    margin: float,
    runtime: Runtime,
) -> torch.Tensor:
    """One f step of Method II: Eq. 2 on a batch of triplets (anchor, positive, negative
    images, each (B,3,H,W) in [0,1]), embedded in one forward pass; backward, optimizer
    step. Returns the loss, detached, on the device."""
    count = len(triplet[0])
    images = runtime.images(torch.cat(triplet))
    with runtime.autocast():
        embeddings = network(normalize(images, normalization)).float()
    anchor, positive, negative = embeddings.split(count)
    loss = triplet_loss(anchor, positive, negative, margin)
    _descend(optimizer, loss)
    return loss.detach()


def embedding_batch_hard_step(
    network: EmbeddingNet,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    normalization: str,
    margin: float,
    runtime: Runtime,
) -> torch.Tensor:
    """One f step of Method II with ``triplet_sampling: batch_hard``: Eq. 2 on each image's
    hardest triplet within the batch (images (N,3,H,W) in [0,1], labels (N,); see
    :func:`wsol.losses.batch_hard_triplet_loss`); backward, optimizer step. Returns the
    loss, detached, on the device."""
    images = runtime.images(images)
    labels = labels.to(runtime.device, non_blocking=runtime.pin_memory)
    with runtime.autocast():
        embeddings = network(normalize(images, normalization)).float()
    loss = batch_hard_triplet_loss(embeddings, labels, margin)
    _descend(optimizer, loss)
    return loss.detach()


def embedding_softmax_step(
    network: EmbeddingNet,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    normalization: str,
    scale: float,
    runtime: Runtime,
) -> torch.Tensor:
    """One f step of Method II with ``embedding_loss: normalized_softmax``: the cosine
    softmax over the network's class proxies on a batch (images (N,3,H,W) in [0,1],
    labels (N,); see :func:`wsol.losses.normalized_softmax_loss`); backward, optimizer
    step. Returns the loss, detached, on the device."""
    if network.class_proxies is None:
        raise ValueError("the embedding network was built without class_proxies")
    images = runtime.images(images)
    labels = labels.to(runtime.device, non_blocking=runtime.pin_memory)
    with runtime.autocast():
        embeddings = network(normalize(images, normalization)).float()
    loss = normalized_softmax_loss(embeddings, labels, network.class_proxies.float(), scale)
    _descend(optimizer, loss)
    return loss.detach()


def method1_train_step(
    classifier: Classifier,
    mask_generator: MaskGenerator,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    config: RunConfig,
    runtime: Runtime,
) -> LossTerms:
    """One g step of Eq. 1 on a batch (images (B,3,H,W) in [0,1]), under ``runtime``'s
    placement and precision: g forward and backward; the frozen f (no parameter
    gradients) on I once, under no_grad, for the target f(I), and on I*M with gradients
    to its input only; the optimizer step. I*M reuses the normalised batch. Returns the
    loss terms, detached and on the device (read them once per epoch, not per step)."""
    cfg, normalization = config.mask, config.data.normalization
    images = runtime.images(images)
    with runtime.autocast():
        normalized = normalize(images, normalization)
        with torch.no_grad():
            target_logits = classifier(normalized)
        masks = mask_generator(normalized).float()
        terms = method1_loss(
            classifier,
            images,
            masks,
            target_logits,
            lam=cfg.lam,
            use_ce=cfg.ce,
            use_reg=cfg.reg,
            normalization=normalization,
            apply_to=cfg.apply_to,
            normalized=normalized,
        )
    _descend(optimizer, terms.total)
    return LossTerms(total=terms.total.detach(), ce=terms.ce.detach(), reg=terms.reg.detach())


def method2_train_step(
    embedding: EmbeddingNet,
    mask_generator: MaskGenerator,
    optimizer: torch.optim.Optimizer,
    triplet: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    config: RunConfig,
    runtime: Runtime,
) -> Method2Terms:
    """One g step of Method II on a batch of triplets (anchor, positive, negative images,
    each (B,3,H,W) in [0,1]), under ``runtime``: g maps the 3B images in one pass; the
    frozen f embeds the anchors once under no_grad for the target, and I*M with gradients
    to its input only; the optimizer step. Returns the terms, detached, on the device."""
    cfg, normalization = config.mask, config.data.normalization
    roles = [runtime.images(images) for images in triplet]
    count = len(roles[0])
    with runtime.autocast():
        normalized = normalize(torch.cat(roles), normalization)
        with torch.no_grad():
            anchor_embedding = embedding(normalized[:count]).float()
        masks = mask_generator(normalized).float().split(count)
        terms = method2_loss(
            embedding,
            (roles[0], roles[1], roles[2]),
            (masks[0], masks[1], masks[2]),
            anchor_embedding,
            lam=cfg.lam,
            use_inner=cfg.inner,
            use_outer=cfg.outer,
            use_reg=cfg.reg,
            margin=cfg.triplet_margin,
            normalization=normalization,
            apply_to=cfg.apply_to,
        )
    _descend(optimizer, terms.total)
    return Method2Terms(
        total=terms.total.detach(),
        inner=terms.inner.detach(),
        outer=terms.outer.detach(),
        reg=terms.reg.detach(),
    )


# --------------------------------------------------------------------------- f's validation


@torch.no_grad()
def evaluate_classifier(
    classifier: Classifier, dataset: WsolDataset, config: RunConfig, runtime: Runtime
) -> dict[str, float]:
    """Top-1 accuracy (%) and mean CE of a softmax f on ``dataset`` (centre crops)."""
    was_training = classifier.training
    classifier.eval()
    loader = make_eval_loader(dataset, F_EVAL_BATCH, config, runtime.device)
    correct, loss, seen = 0, 0.0, 0
    for batch in loader:
        images = runtime.images(batch["image"])
        labels = batch["label"].to(runtime.device)
        with runtime.autocast():
            logits = classifier(normalize(images, config.data.normalization)).float()
        loss += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
    classifier.train(was_training)
    return {"val_top1_cls": 100.0 * correct / max(seen, 1), "val_loss": loss / max(seen, 1)}


@torch.no_grad()
def embed_dataset(
    network: EmbeddingNet, dataset: WsolDataset, config: RunConfig, runtime: Runtime
) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings (N, D), labels (N,)) of ``dataset`` in order, on the CPU, in eval mode
    (fp32 embeddings; computed under ``runtime``'s placement and precision)."""
    was_training = network.training
    network.eval()
    loader = make_eval_loader(dataset, F_EVAL_BATCH, config, runtime.device)
    embeddings, labels = [], []
    for batch in loader:
        images = runtime.images(batch["image"])
        with runtime.autocast():
            embedded = network(normalize(images, config.data.normalization))
        embeddings.append(embedded.float().cpu())
        labels.append(batch["label"])
    network.train(was_training)
    if not embeddings:
        return torch.zeros(0, network.embedding_dim), torch.zeros(0, dtype=torch.int64)
    return torch.cat(embeddings), torch.cat(labels)


@torch.no_grad()
def evaluate_embedding(
    network: EmbeddingNet,
    means_set: WsolDataset,
    val_set: WsolDataset,
    val_triplets: np.ndarray | None,
    config: RunConfig,
    runtime: Runtime,
) -> dict[str, float]:
    """Set f's class means from ``means_set`` (the training split, centre crops), then on
    ``val_set``: ``val_top1_cls`` (%, nearest class mean) and ``val_loss`` (mean Eq. 2
    over ``val_triplets``; NaN when there are none)."""
    device = runtime.device
    train_embeddings, train_labels = embed_dataset(network, means_set, config, runtime)
    network.set_class_means(train_embeddings.to(device), train_labels.to(device))
    val_embeddings, val_labels = embed_dataset(network, val_set, config, runtime)
    predicted = network.logits_from_embeddings(val_embeddings.to(device)).argmax(1).cpu()
    correct = int((predicted == val_labels).sum())
    loss = math.nan
    if val_triplets is not None and len(val_triplets):
        anchor, positive, negative = (val_embeddings[val_triplets[:, k]] for k in range(3))
        loss = triplet_loss(anchor, positive, negative, config.classifier.triplet_margin).item()
    return {"val_top1_cls": 100.0 * correct / max(len(val_labels), 1), "val_loss": loss}


# --------------------------------------------------------------------------- g's validation


class Method1Validation:
    """Eq. 1's terms summed over one validation pass: ``val_loss``, ``val_ce``, ``val_reg``
    (means over the images)."""

    def __init__(self, classifier: nn.Module, config: RunConfig) -> None:
        self.classifier, self.config = classifier, config
        self.sums = {"loss": 0.0, "ce": 0.0, "reg": 0.0}

    def add(
        self, images: torch.Tensor, normalized: torch.Tensor, masks: torch.Tensor, runtime: Runtime
    ) -> None:
        """One batch: images (B,3,H,W) in [0,1], their normalisation, g's masks (B,1,H,W)."""
        cfg = self.config.mask
        with runtime.autocast():
            target_logits = self.classifier(normalized)
            terms = method1_loss(
                self.classifier,
                images,
                masks,
                target_logits,
                lam=cfg.lam,
                use_ce=cfg.ce,
                use_reg=cfg.reg,
                normalization=self.config.data.normalization,
                apply_to=cfg.apply_to,
                normalized=normalized,
            )
        batch_size = len(images)
        self.sums["loss"] += terms.total.item() * batch_size
        self.sums["ce"] += terms.ce.item() * batch_size
        self.sums["reg"] += terms.reg.item() * batch_size

    def metrics(self, count: int) -> dict[str, float]:
        return {f"val_{name}": total / count for name, total in self.sums.items()}


class Method2Validation:
    """Method II's terms over one validation pass: ``val_loss`` (the active terms, as
    :func:`wsol.losses.method2_total` sums them), ``val_inner`` (Eq. 3, mean over every
    image), ``val_outer`` (Eq. 4 over fixed validation ``triplets``; left out when the
    split admits none), ``val_reg``."""

    def __init__(
        self, embedding: nn.Module, config: RunConfig, triplets: np.ndarray | None
    ) -> None:
        self.embedding, self.config, self.triplets = embedding, config, triplets
        self.inner_sum, self.reg_sum = 0.0, 0.0
        self.foregrounds: list[torch.Tensor] = []

    def add(
        self, images: torch.Tensor, normalized: torch.Tensor, masks: torch.Tensor, runtime: Runtime
    ) -> None:
        """One batch: images (B,3,H,W) in [0,1], their normalisation, g's masks (B,1,H,W)."""
        cfg, normalization = self.config.mask, self.config.data.normalization
        with runtime.autocast():
            target = self.embedding(normalized).float()
            fore = self.embedding(weighted_input(images, masks, normalization, cfg.apply_to))
            back = self.embedding(weighted_input(images, 1.0 - masks, normalization, cfg.apply_to))
            fore, back = fore.float(), back.float()
        self.inner_sum += triplet_losses(target, fore, back, cfg.triplet_margin).sum().item()
        self.reg_sum += masks.mean(dim=(1, 2, 3)).sum().item()
        self.foregrounds.append(fore.cpu())

    def metrics(self, count: int) -> dict[str, float]:
        cfg = self.config.mask
        inner, reg = self.inner_sum / count, self.reg_sum / count
        outer = None
        if self.triplets is not None and len(self.triplets):
            fore_all = torch.cat(self.foregrounds)
            outer = triplet_loss(
                *(fore_all[self.triplets[:, k]] for k in range(3)), cfg.triplet_margin
            ).item()
        loss = method2_total(
            0.0,
            inner,
            0.0 if outer is None else outer,
            reg,
            lam=cfg.lam,
            use_inner=cfg.inner,
            use_outer=cfg.outer and outer is not None,
            use_reg=cfg.reg,
        )
        return {
            "val_loss": loss,
            "val_inner": inner,
            **({"val_outer": outer} if outer is not None else {}),
            "val_reg": reg,
        }


# --------------------------------------------------------------------------- the methods


def _backbone(config: ClassifierConfig) -> dict[str, Any]:
    """f's backbone arguments, the same for both methods' networks."""
    return {
        "backbone": config.backbone,
        "pretrained": config.pretrained,
        "weights_path": config.weights_path,
        "small_input_stem": config.small_input_stem,
        "width": config.width,
    }


def _shuffled_f_batches(
    config: RunConfig, train_set: WsolDataset, epoch: int, device: torch.device
) -> Iterable:
    """One epoch of f's training batches: the training split shuffled by (classifier.seed,
    epoch), classifier.batch_size images a batch."""
    return make_loader(
        train_set,
        config.classifier.batch_size,
        train=True,
        seed=config.classifier.seed,
        epoch=epoch,
        num_workers=config.data.num_workers,
        device=device,
    )


class _Method:
    """What both methods hold: the run's config and, for the loops, its splits."""

    g_terms: ClassVar[tuple[str, ...]]

    def __init__(self, config: RunConfig, splits: TrainingSplits | None = None) -> None:
        self.config = config
        self.splits = splits

    @classmethod
    def validation_metrics(cls) -> tuple[str, ...]:
        """Every metric g's validation pass reports, in order (``val_outer`` needs
        validation triplets, ``val_gt_known_loc`` validation boxes)."""
        terms = tuple(f"val_{term}" for term in cls.g_terms)
        return (
            "val_s_score",
            "val_s_score_se",
            *terms,
            "val_mask_mean",
            "val_box_fraction",
            "val_gt_known_loc",
        )


class MethodI(_Method):
    """Method I (Eq. 1): a softmax classifier f; g on single images."""

    number: ClassVar[int] = 1
    label: ClassVar[str] = "Method I (Eq. 1)"
    f_type: ClassVar[type[nn.Module]] = Classifier
    #: The loss terms g_step returns, the total first.
    g_terms: ClassVar[tuple[str, ...]] = ("loss", "ce", "reg")

    @staticmethod
    def build_f(config: ClassifierConfig, num_classes: int) -> nn.Module:
        return Classifier(num_classes, **_backbone(config))

    def f_batches(self, train_set: WsolDataset, epoch: int, device: torch.device) -> Iterable:
        return _shuffled_f_batches(self.config, train_set, epoch, device)

    def f_step(
        self, f: nn.Module, optimizer: torch.optim.Optimizer, batch: Any, runtime: Runtime
    ) -> tuple[int, torch.Tensor]:
        loss = classifier_train_step(
            f, optimizer, batch["image"], batch["label"], self.config.data.normalization, runtime
        )
        return len(batch["label"]), loss

    def f_validate(self, f: nn.Module, val_set: WsolDataset, runtime: Runtime) -> dict[str, float]:
        return evaluate_classifier(f, val_set, self.config, runtime)

    def check_g_loss(self) -> None:
        cfg = self.config.mask
        if not (cfg.ce or cfg.reg):
            raise ConfigError("mask.ce and mask.reg are both false: Eq. 1 has nothing to minimise")

    def g_batches(self, train_set: WsolDataset, epoch: int, device: torch.device) -> Iterable:
        return make_loader(
            train_set,
            self.config.mask.batch_size,
            train=True,
            seed=self.config.seed,
            epoch=epoch,
            num_workers=self.config.data.num_workers,
            device=device,
        )

    def g_step(
        self,
        f: nn.Module,
        g: MaskGenerator,
        optimizer: torch.optim.Optimizer,
        batch: Any,
        runtime: Runtime,
    ) -> tuple[int, torch.Tensor]:
        terms = method1_train_step(f, g, optimizer, batch["image"], self.config, runtime)
        return len(batch["image"]), torch.stack([terms.total, terms.ce, terms.reg])

    def g_validation(self, f: nn.Module) -> Method1Validation:
        return Method1Validation(f, self.config)


class MethodII(_Method):
    """Method II (Eq. 2-4): a Siamese embedding f; g on triplets of images."""

    number: ClassVar[int] = 2
    label: ClassVar[str] = "Method II (Eq. 3, 4)"
    f_type: ClassVar[type[nn.Module]] = EmbeddingNet
    g_terms: ClassVar[tuple[str, ...]] = ("loss", "inner", "outer", "reg")

    def _training_split(self) -> TrainingSplits:
        if self.splits is None:
            raise ValueError("Method II needs the training splits to draw triplets")
        return self.splits

    @cached_property
    def _f_sampler(self) -> TripletSampler:
        cfg = self.config.classifier
        labels = [sample.label for sample in self._training_split().train]
        return TripletSampler(labels, cfg.seed, cfg.triplets_per_anchor)

    @cached_property
    def _f_batch_sampler(self) -> ClassBalancedBatches:
        cfg = self.config.classifier
        labels = [sample.label for sample in self._training_split().train]
        per_class = cfg.triplet_images_per_class
        return ClassBalancedBatches(labels, cfg.batch_size // per_class, per_class, cfg.seed)

    @cached_property
    def _g_sampler(self) -> TripletSampler:
        labels = [sample.label for sample in self._training_split().train]
        return TripletSampler(labels, self.config.seed)

    @cached_property
    def _val_triplets(self) -> np.ndarray | None:
        return validation_triplets([sample.label for sample in self._training_split().val])

    @cached_property
    def _means_set(self) -> WsolDataset:
        # f classifies by the nearest training-split class mean, taken on centre crops.
        return make_dataset(
            self._training_split().train,
            self.config.data,
            train=False,
            seed=self.config.classifier.seed,
        )

    @staticmethod
    def build_f(config: ClassifierConfig, num_classes: int) -> nn.Module:
        return EmbeddingNet(
            num_classes,
            embedding_dim=config.embedding_dim,
            normalize=config.normalize_embedding,
            batchnorm=config.embedding_batchnorm,
            class_proxies=config.embedding_loss == "normalized_softmax",
            **_backbone(config),
        )

    def _triplet_batches(
        self,
        train_set: WsolDataset,
        triplets: np.ndarray,
        batch_size: int,
        epoch: int,
        device: torch.device,
    ) -> Iterable:
        return make_triplet_loader(
            train_set,
            triplets,
            batch_size,
            epoch=epoch,
            num_workers=self.config.data.num_workers,
            device=device,
        )

    def f_batches(self, train_set: WsolDataset, epoch: int, device: torch.device) -> Iterable:
        if self.config.classifier.embedding_loss == "normalized_softmax":
            return _shuffled_f_batches(self.config, train_set, epoch, device)
        if self.config.classifier.triplet_sampling == "batch_hard":
            return make_batch_loader(
                train_set,
                self._f_batch_sampler.batches(epoch),
                epoch=epoch,
                num_workers=self.config.data.num_workers,
                device=device,
            )
        triplets = self._f_sampler.triplets(epoch)
        batch_size = self.config.classifier.batch_size
        return self._triplet_batches(train_set, triplets, batch_size, epoch, device)

    def f_step(
        self, f: nn.Module, optimizer: torch.optim.Optimizer, batch: Any, runtime: Runtime
    ) -> tuple[int, torch.Tensor]:
        cfg = self.config.classifier
        if cfg.embedding_loss == "normalized_softmax":
            loss = embedding_softmax_step(
                f,
                optimizer,
                batch["image"],
                batch["label"],
                self.config.data.normalization,
                cfg.embedding_softmax_scale,
                runtime,
            )
            return len(batch["image"]), loss
        if cfg.triplet_sampling == "batch_hard":
            loss = embedding_batch_hard_step(
                f,
                optimizer,
                batch["image"],
                batch["label"],
                self.config.data.normalization,
                self.config.classifier.triplet_margin,
                runtime,
            )
            return len(batch["image"]), loss
        triplet = tuple(batch[role]["image"] for role in TRIPLET_ROLES)
        loss = embedding_train_step(
            f,
            optimizer,
            triplet,
            self.config.data.normalization,
            self.config.classifier.triplet_margin,
            runtime,
        )
        return len(triplet[0]), loss

    def f_validate(self, f: nn.Module, val_set: WsolDataset, runtime: Runtime) -> dict[str, float]:
        return evaluate_embedding(
            f, self._means_set, val_set, self._val_triplets, self.config, runtime
        )

    def check_g_loss(self) -> None:
        cfg = self.config.mask
        if not (cfg.inner or cfg.outer or cfg.reg):
            raise ConfigError(
                "mask.inner, mask.outer and mask.reg are all false: Method II's loss has "
                "nothing to minimise"
            )

    def g_batches(self, train_set: WsolDataset, epoch: int, device: torch.device) -> Iterable:
        triplets = self._g_sampler.triplets(epoch)
        batch_size = self.config.mask.batch_size
        return self._triplet_batches(train_set, triplets, batch_size, epoch, device)

    def g_step(
        self,
        f: nn.Module,
        g: MaskGenerator,
        optimizer: torch.optim.Optimizer,
        batch: Any,
        runtime: Runtime,
    ) -> tuple[int, torch.Tensor]:
        triplet = tuple(batch[role]["image"] for role in TRIPLET_ROLES)
        terms = method2_train_step(f, g, optimizer, triplet, self.config, runtime)
        return len(triplet[0]), torch.stack([terms.total, terms.inner, terms.outer, terms.reg])

    def g_validation(self, f: nn.Module) -> Method2Validation:
        return Method2Validation(f, self.config, self._val_triplets)


Method = MethodI | MethodII
METHODS: dict[int, type[MethodI] | type[MethodII]] = {1: MethodI, 2: MethodII}


def method_of(config: RunConfig, splits: TrainingSplits | None = None) -> Method:
    """The method ``config.mask.method`` names, for ``config`` (and its ``splits``, which
    Method II draws its triplets from)."""
    return METHODS[config.mask.method](config, splits)
