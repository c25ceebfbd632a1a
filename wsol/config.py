"""The one typed, validated configuration schema.

The same :class:`RunConfig` serves a single local run (``wsol train``), one trial of a
study, and a study spec's base config. Every field a user may sweep is here, so any
table of the paper is a config (or a spec over configs).

Defaults are the paper's full-scale settings (CUB-200-2011, 224 px crops, pretrained
ResNet18). CPU-scale settings live in ``configs/synthetic_cpu.yaml``.

Overrides use dotted paths (``mask.lam=0.5``); unknown keys are rejected and values are
type-checked by the schema, so a typo fails loudly instead of being ignored.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

BackboneName = Literal["resnet18", "resnet34", "resnet50", "resnet101"]
# The keys of wsol.data.formats.FORMATS (a test keeps the two equal).
DatasetFormatName = Literal[
    "cub",
    "cars",
    "flowers",
    "tinyimagenet",
    "wsolbench_cub",
    "wsolbench_ilsvrc",
    "wsolbench_openimages",
]


class StrictModel(BaseModel):
    """Base: unknown fields are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(StrictModel):
    """Where the images are and how they are read and transformed."""

    root: Path = Field(Path("data/CUB_200_2011"), description="Dataset folder.")
    format: DatasetFormatName = Field(
        "cub",
        description="Directory layout of `root`, each a dataset's official release (see "
        "wsol.data.formats): cub, cars (Stanford Cars devkit), flowers (Oxford 102), "
        "tinyimagenet (Tiny-ImageNet-200), wsolbench_cub / wsolbench_ilsvrc / "
        "wsolbench_openimages (the metadata of Choe et al., CVPR 2020).",
    )
    resize: int = Field(256, ge=8, description="Images are resized to resize x resize px.")
    crop: int = Field(224, ge=32, description="Then cropped to crop x crop px (multiple of 32).")
    val_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=1.0,
        description="Share of each class's training images held out for validation (formats "
        "with an official validation split, flowers and wsolbench_*, use that instead).",
    )
    split_seed: int = Field(0, description="Seed of the train/validation carve (not the run seed).")
    normalization: Literal["imagenet", "per_image"] = Field(
        "imagenet",
        description="'imagenet': fixed ImageNet mean/std (pretrained nets); "
        "'per_image': each image standardised by its own mean/std (from-scratch nets).",
    )
    num_workers: int | Literal["auto"] = Field(
        "auto",
        description="DataLoader worker processes, or 'auto': sized to the run's CPU share "
        "(OMP_NUM_THREADS, which Ray sets to a trial's resources.cpu): that share minus one "
        "(at most 8) on CUDA, 0 on CPU, where the step itself uses every core "
        "(wsol.compute.resolve_num_workers).",
    )
    cache: bool = Field(
        False,
        description="Decode and resize every image once into a uint8 memory-mapped array "
        "under cache_dir, shared by every run and trial on the node; crops and flips are then "
        "cut from it (wsol.data.cache). Items are identical to decoding every epoch.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Node-local folder of the decoded-image cache (default: $WSOL_CACHE_DIR, "
        "else ~/.cache/wsol-study/decoded-images).",
    )
    hflip: bool = Field(
        True,
        description="The training transform's random horizontal flip (p = 0.5), for f's and "
        "g's training alike (the paper's augmentation). false: no flips, for classes whose "
        "mirror image is another or an unseen object (`wsol synth --kind shapes`).",
    )
    crop_scale: tuple[float, float] = Field(
        (1.0, 1.0),
        description="[low, high]: the training crop's side is s x crop px for s uniform in "
        "[low, high] (a square window anywhere in the resized image), resized to crop x crop: "
        "a random-resized crop, for f's and g's training alike. [1, 1] (default): the "
        "paper's fixed-size random crop. Needs 0 < low <= high and high x crop <= resize.",
    )
    require_masks: bool = Field(
        False,
        description="Every image must have a segmentation mask, so that PxAP can be computed "
        "(the paper's Tables 4 and 5, CUB and Flowers): reading fails, and `wsol data check` "
        "and the study pre-flight report each image without one.",
    )

    @field_validator("crop")
    @classmethod
    def _crop_divisible_by_32(cls, crop: int) -> int:
        if crop % 32:
            raise ValueError(f"must be a multiple of 32 (g downsamples 5 times), got {crop}")
        return crop

    @model_validator(mode="after")
    def _crop_scale_fits(self) -> DataConfig:
        low, high = self.crop_scale
        if not 0.0 < low <= high:
            raise ValueError(
                f"data.crop_scale must be [low, high] with 0 < low <= high, got {[low, high]}"
            )
        if high * self.crop > self.resize:
            raise ValueError(
                f"data.crop_scale high {high:g} x data.crop {self.crop} = {high * self.crop:g} px "
                f"exceeds data.resize {self.resize}: the window must fit the resized image"
            )
        return self

    @field_validator("num_workers", mode="before")
    @classmethod
    def _workers_count_or_auto(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"must be a count >= 0 or 'auto', got {value!r}")
        return value


def _check_scratch_width(
    width: float, pretrained: bool, weights_path: Path | None, section: str
) -> None:
    """A network whose channel counts are scaled (``width`` != 1) cannot take ImageNet-shaped
    weights: ValueError naming ``section``'s fields."""
    if width != 1.0 and (pretrained or weights_path is not None):
        source = "weights_path" if weights_path is not None else "pretrained: true"
        network = "f's backbone" if section == "classifier" else "g's encoder"
        raise ValueError(
            f"width={width:g} scales every channel count of {network}, so ImageNet-shaped "
            f"weights ({source}) cannot be loaded into it; set {section}.pretrained: false "
            f"and no {section}.weights_path, or width: 1"
        )


class ClassifierConfig(StrictModel):
    """The network f and how it is trained (paper's defaults).

    Which f is trained follows ``mask.method`` (:attr:`RunConfig.classifier_kind`): Method
    I's softmax classifier (ResNet, GAP, one FC layer, CE training) or Method II's Siamese
    embedding (ResNet, GAP, linear projection to ``embedding_dim``, the triplet loss of
    Eq. 2). Both share the backbone, init and optimiser fields.
    """

    backbone: BackboneName = "resnet18"
    pretrained: bool = Field(True, description="Start from torchvision's ImageNet weights.")
    weights_path: Path | None = Field(None, description="Local backbone weights file (.pth).")
    small_input_stem: bool = Field(
        False,
        description="3x3 stride-2 first conv, no max-pool: keeps 32-96 px inputs' "
        "feature maps large enough for CAM.",
    )
    checkpoint: Path | None = Field(
        None, description="A trained classifier (classifier.pt) to load instead of training one."
    )
    seed: int = Field(
        0,
        description="Seed of f's training, apart from the run seed, so a seed sweep of g "
        "reuses one f; sweep classifier.seed to retrain f per seed.",
    )
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(16, ge=1)
    epochs: int = Field(200, ge=1)
    lr_step: int = Field(
        80, ge=1, description="The learning rate is multiplied by lr_gamma every lr_step epochs."
    )
    lr_gamma: float = Field(0.1, gt=0, le=1)
    schedule: Literal["step", "cosine", "onecycle"] = Field(
        "step",
        description="f's learning-rate schedule (wsol.compute.make_lr_schedule). 'step': lr "
        "times lr_gamma every lr_step epochs (the paper's). 'cosine': cosine annealing from "
        "lr to 0 over every optimizer step of the run. 'onecycle': torch's one-cycle policy "
        "over every step (warm-up over the first 30 % from lr/25 to lr, then cosine down to "
        "lr/2.5e5; momentum stays as configured). lr_step and lr_gamma are read by 'step' only.",
    )
    width: float = Field(
        1.0,
        gt=0,
        le=4,
        description="Multiplier of the ResNet's channel counts (64, 128, 256, 512 times it, "
        "rounded), for f trained from scratch: 0.5 has about a quarter of the parameters. "
        "Anything but 1 needs pretrained: false and no weights_path (the weights would not fit).",
    )
    embedding_dim: int = Field(
        200, ge=1, description="Method II: the 512-d pooled features are projected to this."
    )
    triplet_margin: float = Field(1.0, gt=0, description="Method II: the margin of Eq. 2.")
    normalize_embedding: bool = Field(
        False,
        description="Method II, ours (the paper does not normalise): scale f's embeddings to "
        "unit L2 norm, for f and for g's losses. Helps from-scratch f escape the collapsed "
        "state (all embeddings near one point, loss = margin).",
    )
    embedding_batchnorm: bool = Field(
        False,
        description="Method II, ours (the paper has none): a batch norm on the projected "
        "embedding, before normalize_embedding (wsol.models.EmbeddingNet). In training each "
        "embedding dimension is standardised over the batch, so a from-scratch f cannot sit "
        "with every embedding at one point (loss = margin), where it otherwise starts: the "
        "pooled features of an untrained ResNet share one dominant direction.",
    )
    triplet_sampling: Literal["random", "batch_hard"] = Field(
        "random",
        description="Method II: how f's Eq. 2 triplets are drawn. 'random' (the paper's): "
        "wsol.triplets.TripletSampler, batch_size triplets (3 x batch_size images) a batch; "
        "a class with one image is never an anchor. 'batch_hard' (ours): batches of "
        "batch_size images, batch_size / triplet_images_per_class classes of "
        "triplet_images_per_class images each (wsol.triplets.ClassBalancedBatches), each "
        "image an anchor with its hardest positive and negative in the batch "
        "(wsol.losses.batch_hard_triplet_loss). g's triplets are always 'random'.",
    )
    embedding_loss: Literal["triplet", "normalized_softmax"] = Field(
        "triplet",
        description="Method II: f's training loss. 'triplet' (the paper's): Eq. 2 on the "
        "triplets triplet_sampling draws. 'normalized_softmax' (ours): cross-entropy over "
        "embedding_softmax_scale times the cosine of each embedding to one learned proxy a "
        "class (wsol.losses.normalized_softmax_loss), on shuffled batches of batch_size "
        "images as a softmax classifier's; triplet_sampling must stay 'random' (it draws "
        "nothing then). g's losses (Eq. 3, 4) and the nearest-class-mean classification are "
        "the same under both.",
    )
    embedding_softmax_scale: float = Field(
        16.0,
        gt=0,
        description="Method II, embedding_loss 'normalized_softmax': the inverse temperature "
        "of the softmax over cosines (which lie in [-1, 1]).",
    )
    triplets_per_anchor: int = Field(
        1,
        ge=1,
        description="Method II, triplet_sampling 'random': triplets per training image (as "
        "anchor) per epoch.",
    )
    triplet_images_per_class: int = Field(
        4,
        ge=2,
        description="Method II, triplet_sampling 'batch_hard': images of each class in a "
        "batch (K; batch_size must be a multiple of it, with at least 2 classes a batch).",
    )

    @model_validator(mode="after")
    def _width_needs_scratch_training(self) -> ClassifierConfig:
        _check_scratch_width(self.width, self.pretrained, self.weights_path, "classifier")
        return self

    @model_validator(mode="after")
    def _softmax_embedding_draws_no_triplets(self) -> ClassifierConfig:
        if self.embedding_loss == "normalized_softmax" and self.triplet_sampling != "random":
            raise ValueError(
                f"triplet_sampling={self.triplet_sampling!r} is read by embedding_loss "
                "'triplet' only: 'normalized_softmax' trains f on shuffled batches of "
                "batch_size images; leave triplet_sampling at 'random'"
            )
        return self

    @model_validator(mode="after")
    def _batch_hard_batches_fit(self) -> ClassifierConfig:
        if self.triplet_sampling != "batch_hard":
            return self
        per_class = self.triplet_images_per_class
        if self.batch_size % per_class or self.batch_size // per_class < 2:
            raise ValueError(
                f"triplet_sampling 'batch_hard' fills a batch with classes of "
                f"triplet_images_per_class={per_class} images each and needs at least 2 of "
                f"them: batch_size={self.batch_size} must be a multiple of {per_class} and at "
                f"least {2 * per_class}"
            )
        if self.triplets_per_anchor != 1:
            raise ValueError(
                f"triplets_per_anchor={self.triplets_per_anchor} is read by triplet_sampling "
                "'random' only: 'batch_hard' makes every image of a batch an anchor once"
            )
        return self


# Bumped when the meaning of classifier_key's inputs changes, so stale f's are not reused.
_CLASSIFIER_KEY_VERSION = "classifier-key-v1"
# Classifier fields that only Method II's embedding network reads; a softmax
# classifier's identity (study.spec.classifier_key) leaves them out.
EMBEDDING_ONLY_FIELDS = (
    "embedding_dim",
    "triplet_margin",
    "normalize_embedding",
    "embedding_batchnorm",
    "triplet_sampling",
    "embedding_loss",
    "embedding_softmax_scale",
    "triplets_per_anchor",
    "triplet_images_per_class",
)


class MaskConfig(StrictModel):
    """The mask generator g, its loss and how g is trained.

    ``method: 1``: Eq. 1 (``ce``, ``reg``, ``lam``). ``method: 2``: L_inner (Eq. 3) +
    L_outer (Eq. 4) + lam * R(M_a) (``inner``, ``outer``, ``reg``, ``lam``,
    ``triplet_margin``); ``ce`` is not read.
    """

    encoder: BackboneName = "resnet18"
    pretrained: bool = True
    weights_path: Path | None = None
    width: float = Field(
        1.0,
        gt=0,
        le=4,
        description="Multiplier of g's channel counts: the encoder's (as classifier.width) "
        "and the decoder blocks' (256, 128, 64, 32 times it; the mask stays one channel). "
        "Anything but 1 needs pretrained: false and no weights_path.",
    )
    final_norm: bool = Field(
        True,
        description="Batch norm after the last decoder convolution, before the sigmoid (the "
        "paper's Architecture paragraph, read for every block). false: the mask's logits "
        "come from the convolution alone, so g can lower the whole map at once (with the "
        "norm only its learned shift can: from scratch, boxes cover the whole image for "
        "the first epochs).",
    )
    lam: float = Field(1.0, ge=0, description="lambda, the weight of the L1 regularizer R.")
    reg: bool = Field(True, description="Use R = mean L1 of M (Fig. 8 ablation: false).")
    ce: bool = Field(True, description="Use D = CE(f(I), f(I*M)).")
    apply_to: Literal["normalized", "raw"] = Field(
        "normalized",
        description="'normalized': I*M multiplies the normalised image, so a masked-out pixel "
        "becomes the normalisation mean ('no information' for f); 'raw': multiplies [0,1] "
        "pixels, so a masked-out pixel becomes black, then normalises.",
    )
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(1e-4, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(128, ge=1)
    epochs: int = Field(100, ge=1)
    schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description="g's learning rate: 'constant' (the paper names no schedule for g); "
        "'cosine': annealed from lr to 0 over every optimizer step of mask.epochs, so the "
        "late epochs, among which the S-score selects, change g little.",
    )
    method: Literal[1, 2] = Field(
        1,
        description="1: Eq. 1 against a softmax classifier f; 2: Eq. 3 + Eq. 4 + "
        "lambda*R(M_a) against a Siamese embedding f. Which f the classifier stage trains "
        "follows from this (RunConfig.classifier_kind).",
    )
    inner: bool = Field(True, description="Method II: use L_inner (Eq. 3).")
    outer: bool = Field(True, description="Method II: use L_outer (Eq. 4).")
    triplet_margin: float = Field(
        1.0, gt=0, description="Method II: the margin of Eq. 3 and Eq. 4."
    )

    @model_validator(mode="after")
    def _width_needs_scratch_training(self) -> MaskConfig:
        _check_scratch_width(self.width, self.pretrained, self.weights_path, "mask")
        return self


class SelectionConfig(StrictModel):
    """Early stopping: the epoch of maximal mean validation S-score (Eq. 6), with our guard."""

    threshold: float = Field(0.1, gt=0, lt=1, description="tau = threshold * max(M) (Eq. 5).")
    skip_degenerate: bool = Field(
        True,
        description="Our guard, not the paper's: epochs whose mean predicted box covers more "
        "than max_box_fraction, or less than min_box_fraction, of the image are not "
        "selectable (Eq. 6 is 1.0 for a map above tau everywhere, and for a map that is "
        "empty but for one speck).",
    )
    max_box_fraction: float = Field(0.9, gt=0, le=1)
    min_box_fraction: float = Field(0.01, ge=0, lt=1)
    min_epoch: int = Field(
        1,
        ge=1,
        description="Ours, not the paper's (1: every epoch may be selected, as in the paper): "
        "the first epoch that may be selected. g's first epochs are coarse masks whose one "
        "large blob scores a high S; epochs before this one are excluded as warm-up (they do "
        "not count as degenerate for early termination). Must not exceed mask.epochs.",
    )
    s_tolerance_se: float = Field(
        0.0,
        ge=0,
        le=10,
        description="Ours, not the paper's (0: the epoch of maximal S, as in the paper): "
        "keep the latest epoch after the max-S one whose S is within this many standard "
        "errors (of the max-S epoch's mean S over the validation images) of the maximum. "
        "S differences below their standard error are not evidence that an epoch is better; "
        "among such epochs the later one has trained longer. Only selectable epochs qualify; "
        "a fallback (every epoch excluded) stays plain max-S.",
    )
    num_visualized: int = Field(6, ge=0, le=32, description="Validation images tracked per epoch.")


class ComputeConfig(StrictModel):
    """How the training loops use the hardware (see wsol.compute). Placement only, except
    ``precision``, which changes the arithmetic."""

    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="'bf16': f's and g's training steps and validation passes run under "
        "torch.autocast with bfloat16 (CPUs with AVX512-BF16 or AMX, CUDA GPUs with bf16); "
        "losses, masks and metrics stay fp32. 'fp32': no autocast. Checked against fp32 on "
        "the synthetic benchmark (README, Performance).",
    )
    channels_last: bool = Field(
        False,
        description="Keep f, g and their image batches in channels-last (NHWC) memory format.",
    )
    cudnn_benchmark: bool = Field(
        True,
        description="On CUDA, let cuDNN time its convolution algorithms for each input shape "
        "and keep the fastest (ignored when deterministic is true).",
    )


class RunConfig(StrictModel):
    """A whole run: data, f, g, selection, how it computes, and its seed and device."""

    name: str = "run"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    deterministic: bool = Field(
        False, description="torch deterministic algorithms (slower on GPU)."
    )
    data: DataConfig = Field(default_factory=DataConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    mask: MaskConfig = Field(default_factory=MaskConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)

    @model_validator(mode="before")
    @classmethod
    def _no_classifier_kind(cls, raw: Any) -> Any:
        classifier = raw.get("classifier") if isinstance(raw, dict) else None
        if isinstance(classifier, dict) and "kind" in classifier:
            raise ValueError(
                f"classifier.kind ({classifier['kind']!r}) is not a field: f's kind follows "
                "mask.method (1: softmax classifier, 2: Siamese embedding); remove "
                "classifier.kind and set mask.method"
            )
        return raw

    @model_validator(mode="after")
    def _min_epoch_within_the_run(self) -> RunConfig:
        if self.selection.min_epoch > self.mask.epochs:
            raise ValueError(
                f"selection.min_epoch={self.selection.min_epoch} is after g's last epoch "
                f"(mask.epochs={self.mask.epochs}): no epoch could be selected; lower "
                "selection.min_epoch or raise mask.epochs"
            )
        return self

    @property
    def classifier_kind(self) -> Literal["softmax", "embedding"]:
        """Which f ``mask.method`` trains g against: Method I's softmax classifier or
        Method II's Siamese embedding network."""
        return "embedding" if self.mask.method == 2 else "softmax"


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file/field and the fix."""


def _format_validation_error(error: ValidationError, source: str) -> str:
    """One ``<dotted field>: <problem>`` line per error under a header naming ``source``.

    An unknown key lists the valid keys of its section (as :func:`set_dotted` does), and
    the offending value is appended only when the message does not already quote it (our
    validators say ``got ...`` themselves).
    """
    lines = [f"invalid config ({source}):"]
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "<root>"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {path}: {unknown_key_message(path)}")
            continue
        got = item.get("input")
        quoted = isinstance(got, dict) or item["type"] == "value_error"
        got_text = "" if quoted else f" (got {got!r})"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {path}: {message}{got_text}")
    return "\n".join(lines)


def upgrade_stored_config(raw: dict[str, Any]) -> dict[str, Any]:
    """A config stored by an earlier version (in a checkpoint or run folder) in today's
    schema: ``classifier.kind``, now derived from ``mask.method``, is dropped."""
    classifier = raw.get("classifier")
    if isinstance(classifier, dict) and "kind" in classifier:
        raw = {**raw, "classifier": {k: v for k, v in classifier.items() if k != "kind"}}
    return raw


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> RunConfig:
    """Validate a nested dict into a :class:`RunConfig`; errors name each bad field path."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"invalid config ({source}): expected a mapping, got {type(raw).__name__}"
        )
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, source)) from None


def read_yaml_mapping(path: Path, what: str, error: type[ConfigError]) -> dict[str, Any]:
    """The mapping in YAML file ``path`` (empty file: ``{}``); ``error`` naming the file
    when it is not UTF-8, not YAML, or not a mapping."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as problem:
        raise error(
            f"{what} {path} is not UTF-8 text (byte {problem.start}: "
            f"{problem.object[problem.start : problem.start + 1]!r}); save it as UTF-8"
        ) from None
    except yaml.YAMLError as problem:
        raise error(f"{what} {path} is not valid YAML: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise error(
            f"{what} {path}: expected a mapping of fields (`key: value` lines), "
            f"got a {type(raw).__name__}"
        )
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config file, apply dotted ``key=value`` overrides, validate.

    Relative ``data.root`` / weight paths stay relative to the working directory, as
    typed on a command line.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    raw = read_yaml_mapping(path, "config file", ConfigError)
    raw = apply_overrides(raw, overrides or [], source=str(path))
    return config_from_dict(raw, source=str(path))


def _known_paths(model: type[BaseModel], prefix: str = "") -> dict[str, type[BaseModel] | None]:
    """Dotted path -> sub-model class for nested models, None for leaves."""
    paths: dict[str, type[BaseModel] | None] = {}
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths[dotted] = annotation
            paths.update(_known_paths(annotation, f"{dotted}."))
        else:
            paths[dotted] = None
    return paths


def unknown_key_message(dotted: str) -> str:
    """What is wrong with ``dotted``, a path that is not a field of :class:`RunConfig`: it
    names the path and lists every valid key of its section (the top level for a section
    that does not exist either), so a typo shows its correction."""
    known = _known_paths(RunConfig)
    parent = dotted.rsplit(".", 1)[0] if "." in dotted else ""
    if parent and parent not in known:
        parent = ""  # the section is unknown too: list the top level
    siblings = sorted(
        path for path in known if (path.rsplit(".", 1)[0] if "." in path else "") == parent
    )
    return f"unknown config key {dotted!r}; valid keys here: {', '.join(siblings) or '(none)'}"


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Return a copy of nested ``raw`` with ``dotted`` set to ``value``.

    Raises ConfigError for a path that is not a field of :class:`RunConfig` (with the
    closest valid names), so ``mask.lamda=0.5`` cannot silently do nothing.
    """
    known = _known_paths(RunConfig)
    if dotted not in known:
        raise ConfigError(unknown_key_message(dotted))
    if known[dotted] is not None and not isinstance(value, dict):
        raise ConfigError(
            f"{dotted!r} is a section; set one of its fields, e.g. {dotted}.<field>=..."
        )
    return set_nested(raw, dotted, value)


def set_nested(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Return a copy of nested ``raw`` with ``dotted`` set to ``value``, creating the
    mappings on the way; no schema check (:func:`set_dotted` checks the key first)."""
    result = _deep_copy(raw)
    node = result
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"{part!r} in {dotted!r} must be a mapping, got {child!r}")
        node = child
    node[parts[-1]] = value
    return result


def _deep_copy(raw: dict[str, Any]) -> dict[str, Any]:
    return {key: _deep_copy(val) if isinstance(val, dict) else val for key, val in raw.items()}


def parse_override(text: str) -> tuple[str, Any]:
    """``'mask.lam=0.5'`` -> ``('mask.lam', 0.5)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. mask.lam=0.5")
    key, value_text = text.split("=", 1)
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else None
    except yaml.YAMLError:
        value = value_text
    return key.strip(), value


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str = "<overrides>") -> dict:
    """Apply ``key=value`` strings to a raw config dict; types are checked on validation."""
    for text in overrides:
        key, value = parse_override(text)
        raw = set_dotted(raw, key, value)
    # Validate now so a bad override is reported as such, not as a bad file.
    config_from_dict(raw, source=f"{source} with overrides {overrides}")
    return raw


def flatten_mapping(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted-name -> leaf value of a nested mapping (an empty mapping has no leaves)."""
    flat: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(flatten_mapping(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def flatten_config(config: RunConfig) -> dict[str, Any]:
    """Dotted-name -> leaf value (paths as str), e.g. for MLflow params and config diffs."""
    return flatten_mapping(config.model_dump(mode="json"))


def config_to_yaml(config: RunConfig) -> str:
    """The resolved config as YAML (what a run folder stores as config.yaml)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


# Fields added after classifier keys were first stored, with their defaults: in the key
# only when set to something else, so a config that leaves them alone keeps its key (and
# reuses the f stored under it).
_IN_KEY_UNLESS_DEFAULT: dict[str, dict[str, Any]] = {
    "data": {"hflip": True, "crop_scale": [1.0, 1.0]},
    "classifier": {
        "schedule": "step",
        "width": 1.0,
        "triplet_images_per_class": 4,
        "embedding_batchnorm": False,
        "embedding_loss": "triplet",
        "embedding_softmax_scale": 16.0,
    },
}

# data fields that do not change f: the loader's worker count, require_masks (a check), and
# the decoded-image cache (it serves identical items).
_DATA_NOT_IN_F = ("num_workers", "require_masks", "cache", "cache_dir")


def classifier_key(config: RunConfig) -> str:
    """Content hash (first 16 hex chars of sha256) of exactly the fields that determine f.

    In: ``data.*`` (which images, the split, resize/crop, normalisation: f's inputs and
    training set), ``classifier.*`` (architecture, init, optimiser, schedule and
    ``classifier.seed``, which alone seeds f's training), ``deterministic`` (changes the
    kernels, so f's weights). Out: ``data.num_workers`` (loaders are seeded per sample, so
    the worker count does not change the data), ``data.require_masks`` (a check: it changes
    no image, and keys from before it existed stay valid), ``classifier.checkpoint`` (a file to load
    *instead of* training: it names where an f is, not what it is), ``mask.*`` and
    ``selection.*`` (only g and its checkpoint choice), ``seed`` (the run seed: g's init and
    data order, not f's), ``name``, and ``device`` (placement: ``auto`` resolves per node,
    and f trained on CPU or GPU is treated as the same f), ``data.cache`` and
    ``data.cache_dir`` (the decoded-image cache serves identical items), and ``compute.*``
    but its ``precision``, which is in when it is not fp32 (bf16 trains another f; fp32
    keys are the same as before the compute section existed). Fields added to ``data`` or
    ``classifier`` later are in by default. Paths are hashed as written (not resolved).
    ``data.hflip``, ``data.crop_scale``, ``classifier.schedule``, ``classifier.width``,
    ``classifier.triplet_images_per_class``, ``classifier.embedding_batchnorm``,
    ``classifier.embedding_loss`` and ``classifier.embedding_softmax_scale`` are in only when
    they differ from their defaults (true, [1, 1], step, 1.0, 4, false, triplet, 16), so keys
    from before they existed stay valid.
    Method II's f (``mask.method: 2``) is keyed with ``kind: embedding`` and the
    embedding-only fields of ``wsol.config.EMBEDDING_ONLY_FIELDS``; a softmax classifier
    leaves them out, as they do not change it: a Siamese embedding network never shares
    a key with a softmax classifier, and Method I keys are the same as before Method II.
    """
    text = json.dumps(classifier_identity(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def classifier_identity(config: RunConfig) -> dict[str, Any]:
    """The fields :func:`classifier_key` hashes (see there), as a nested dict."""
    dumped = config.model_dump(mode="json")
    classifier = {key: value for key, value in dumped["classifier"].items() if key != "checkpoint"}
    if config.classifier_kind == "softmax":
        classifier = {
            key: value for key, value in classifier.items() if key not in EMBEDDING_ONLY_FIELDS
        }
    else:
        classifier["kind"] = config.classifier_kind
    data = {key: value for key, value in dumped["data"].items() if key not in _DATA_NOT_IN_F}
    for section, fields in (("data", data), ("classifier", classifier)):
        for key, default in _IN_KEY_UNLESS_DEFAULT[section].items():
            if fields.get(key) == default:
                del fields[key]
    content = {
        "version": _CLASSIFIER_KEY_VERSION,
        "data": data,
        "classifier": classifier,
        "deterministic": dumped["deterministic"],
    }
    if config.compute.precision != "fp32":
        content["precision"] = config.compute.precision
    return content
