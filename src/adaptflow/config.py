"""Validated parameters: pydantic models mirroring params.yaml.

Loading order: params.yaml -> `--set` overrides -> the chosen profile's overlay -> `--set`
overrides again (so the command line always wins, and `--set profile=smoke` picks the overlay).
Every model forbids unknown keys; a bad value raises `ParamsError` naming the key path.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class ParamsError(ValueError):
    """Invalid parameters: the message names the key path, the bad value and what is allowed."""


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- data sources
class _Source(Frozen):
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="held-out share when the source has no split"
    )


class MnistSource(_Source):
    kind: Literal["mnist"]


class DigitsSource(_Source):
    kind: Literal["digits"]
    size: int = Field(28, ge=8, le=224, description="output side in pixels (8 keeps the original)")
    framing: Literal["stretch", "mnist"] = Field(
        "mnist", description="mnist: glyph scaled to 20/28 of the frame and centred, like MNIST"
    )


class SynDigitsSource(Frozen):
    kind: Literal["syndigits"]
    n_train: int = Field(20000, ge=10)
    n_test: int = Field(2000, ge=10)
    size: int = Field(28, ge=16, le=128)
    max_rotation: float = Field(15.0, ge=0, le=90, description="degrees")
    noise: float = Field(0.05, ge=0, le=0.5, description="std of additive Gaussian pixel noise")


class SynCharsSource(Frozen):
    """Characters rendered like `syndigits` (class i = the i-th character of `charset`)."""

    kind: Literal["synchars"]
    charset: str = Field(
        "alnum", description="'digits', 'alnum' (0-9 + A-Z, 36 classes) or the characters"
    )
    n_train: int = Field(36000, ge=10)
    n_test: int = Field(3600, ge=10)
    size: int = Field(28, ge=16, le=128)
    max_rotation: float = Field(15.0, ge=0, le=90, description="degrees")
    noise: float = Field(0.05, ge=0, le=0.5, description="std of additive Gaussian pixel noise")
    balanced: bool = Field(True, description="every class equally often (else i.i.d. draws)")
    elastic: float = Field(
        1.0, ge=0, le=6, description="std in pixels of a smooth random displacement (0: none)"
    )

    @field_validator("charset")
    @classmethod
    def _valid_charset(cls, v: str) -> str:
        from adaptflow.data.syndigits import charset

        charset(v)  # raises ValueError with the rule
        return v


class Mnist1dSource(Frozen):
    kind: Literal["mnist1d"]
    num_samples: int = Field(5000, ge=100)
    train_split: float = Field(0.8, gt=0, lt=1)


class _FileSource(_Source):
    path: Path
    optional: bool = Field(
        False,
        description="a missing file skips this source (prepare says why) instead of failing; "
        "stages that need it skip with the same reason (e.g. the shared benchmark files)",
    )
    label_offset: int = Field(
        0,
        description="added to the file's labels before anything else (e.g. -1 for MATLAB files "
        "whose label k means class k-1), so two domains' label values can be compared",
    )


Layout = Literal["image", "vector"]
LAYOUT_HELP = (
    "image: rows are images (flat rows must be square, 0-255 rescaled to [0, 1]); "
    "vector: feature vectors (N, D) kept as they are (no reshaping, no rescaling)"
)


class NpzSource(_FileSource):
    kind: Literal["npz"]
    x_key: str = "X"
    y_key: str = "y"
    layout: Layout = Field("image", description=LAYOUT_HELP)


class MatSource(_FileSource):
    kind: Literal["mat"]
    x_key: str | None = Field(None, description="None: first of Xs, fts, X, data found")
    y_key: str | None = Field(None, description="None: first of Ys, labels, y, Y found")
    side: str = Field(
        "source", description="for *_vs_* files: 'source' (Xs/Ys) or 'target' (Xt/Yt)"
    )
    layout: Layout = Field("image", description=LAYOUT_HELP)


class SvmlightSource(_FileSource):
    """An svmlight / libsvm text file (sklearn's loader): feature vectors, kept as vectors."""

    kind: Literal["svmlight"]
    test_path: Path | None = Field(
        None, description="a separate test file (same features); None: a stratified split"
    )
    n_features: int | None = Field(
        None, ge=1, description="None: the largest feature index found (in both files)"
    )
    zero_based: bool | Literal["auto"] = Field(
        "auto", description="feature indices start at 0 (auto: guessed by sklearn)"
    )


class UspsH5Source(_FileSource):
    kind: Literal["usps_h5"]


class ImageFolderSource(_FileSource):
    kind: Literal["image_folder"]
    size: int = Field(28, ge=8, le=512)
    channels: Literal[1, 3] = 1


SourceConfig = Annotated[
    MnistSource
    | DigitsSource
    | SynDigitsSource
    | SynCharsSource
    | Mnist1dSource
    | NpzSource
    | MatSource
    | SvmlightSource
    | UspsH5Source
    | ImageFolderSource,
    Field(discriminator="kind"),
]


class DataConfig(Frozen):
    prepared_dir: Path = Path("data/prepared")
    sources: dict[str, SourceConfig]

    @field_validator("sources")
    @classmethod
    def _names_are_file_safe(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"source name {name!r} must be letters, digits, '-' or '_'")
        return v


# ---------------------------------------------------------------- training
class TrainSettings(Frozen):
    """Trainer knobs every torch stage shares."""

    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(128, ge=1, le=65_536)
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    patience: int | None = Field(
        5, ge=1, description="early-stopping patience in epochs; null: off"
    )
    min_delta: float = Field(0.0, ge=0)
    val_fraction: float = Field(
        0.1, gt=0, lt=1, description="share of train held out for validation"
    )
    max_train: int | None = Field(None, ge=10, description="cap on training examples (smoke runs)")
    amp: bool = Field(True, description="mixed precision when on CUDA (ignored on CPU)")
    log_every: int = Field(20, ge=1, description="steps between loss syncs / progress updates")


# ---------------------------------------------------------------- stages
def _ae_method_names() -> list[str]:
    from adaptflow.methods.ae import AE_METHODS

    return AE_METHODS.names()


class AEStageConfig(TrainSettings):
    dataset: str = "mnist"
    methods: list[str] = Field(
        default_factory=lambda: ["pca", "ae", "sparse", "denoising", "vae"], min_length=1
    )
    archs: list[Literal["mlp", "conv"]] = Field(
        default_factory=lambda: ["mlp"], min_length=1, description="encoder/decoder variants to run"
    )
    register_method: str = Field("ae", description="whose model (first arch) is registered")
    code_size: int = Field(32, ge=1, le=4096)
    hidden: list[Annotated[int, Field(ge=1, le=16384)]] = Field(default_factory=lambda: [256])
    conv_channels: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=lambda: [32, 64], min_length=1, max_length=4
    )
    anomaly_digit: int | None = Field(
        9,
        ge=0,
        description="held out of a second training run; AUROC of its recon error. null: skip",
    )
    anomaly_methods: list[str] = Field(
        default_factory=lambda: ["ae"],
        description="the methods (of `methods`) whose copy without `anomaly_digit` is trained",
    )
    seeds: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [0, 1, 2],
        min_length=1,
        description="training seeds; every claim is paired over them (first: figures, anomaly)",
    )
    gate_margin: float = Field(
        0.0, ge=0, description="validation MSE a new model must beat the champion by"
    )
    eval_sigmas: list[Annotated[float, Field(gt=0, le=2)]] = Field(
        default_factory=lambda: [0.1, 0.3, 0.5], min_length=1, description="Gaussian noise grid"
    )
    eval_mask_ps: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: [0.1, 0.3, 0.5], min_length=1, description="masking noise grid"
    )
    sparse_lambdas: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=list,
        description="the validation sweep's extra lambdas (first seed and arch; with 0 and the "
        "configured lambda): the MSE-vs-activation plot. []: no sweep",
    )
    sparse_baseline: bool = Field(
        False, description="also train the sparse AE with lambda = 0 on every seed (context)"
    )
    sparse_mse_factor: float = Field(
        2.5, gt=1, description="claim: the sparse AE's test MSE is within this factor of the AE's"
    )
    sparse_band_floor: float = Field(
        0.9,
        gt=0,
        lt=1,
        description="claim: the share of sparse code units with mean activation in [rho/2, 2 rho]"
        " exceeds this on every seed (paired against the floor), with no dead unit",
    )
    classifier_epochs: int = Field(
        8, ge=1, description="reference digit classifier that scores generated images"
    )
    gen_samples: int = Field(1000, ge=64, description="generated images scored per method")
    interp_pairs: int = Field(200, ge=1, description="test pairs of different classes")
    interp_steps: int = Field(9, ge=3, description="points per interpolation path (with ends)")
    iw_samples: int = Field(200, ge=100, le=10_000, description="k of the importance-weighted NLL")
    iw_images: int = Field(500, ge=10, description="test images used for the VAE NLL")
    tsne_points: int = Field(500, ge=0, description="test codes in the t-SNE plot (0: no plot)")
    max_test: int | None = Field(None, ge=10, description="cap on test examples (smoke runs)")
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-method options, validated by the method's Config"
    )

    @field_validator("seeds", "eval_sigmas", "eval_mask_ps", "sparse_lambdas")
    @classmethod
    def _unique_sorted(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError("values are listed twice")
        return sorted(v)

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, v: list[str]) -> list[str]:
        names = _ae_method_names()
        for m in v:
            if m not in names:
                raise ValueError(f"unknown ae method {m!r}; valid: {', '.join(names)}")
        if len(set(v)) != len(v):
            raise ValueError("methods are listed twice")
        return v


class PretrainBudget(Frozen):
    """The unsupervised budget of each layer."""

    epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(128, ge=1, le=65_536)
    lr: float = Field(1e-3, gt=0, le=10)
    amp: bool = True


class PretrainStageConfig(TrainSettings):
    """Greedy layer-wise pretraining vs random init; TrainSettings are the fine-tuning budget."""

    dataset: str = "mnist"
    layers: list[Annotated[int, Field(ge=1, le=16384)]] = Field(
        default_factory=lambda: [500, 250, 100], min_length=1, max_length=8
    )
    activation: Literal["sigmoid", "relu", "tanh"] = "sigmoid"
    layer_method: Literal["ae", "denoising", "sparse", "rbm"] = "ae"
    layer_options: dict[str, Any] = Field(
        default_factory=dict, description="the layer method's Config"
    )
    pretrain: PretrainBudget = Field(default_factory=PretrainBudget)
    label_fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: [0.01, 0.05, 0.1, 1.0], min_length=1
    )
    seeds: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [0, 1, 2], min_length=1
    )
    convergence_level: float = Field(
        0.95, gt=0, le=1, description="epochs to reach this share of either arm's best accuracy"
    )
    patience: int | None = Field(
        None, ge=1, description="budget_split only (early stop on the in-budget split); null: off"
    )
    selection: Literal["last_epoch", "budget_split"] = Field(
        "last_epoch",
        description="fine-tuning checkpoint: last_epoch = fixed epochs, no selection; "
        "budget_split = lowest loss on a stratified part of the labelled subset itself",
    )
    select_fraction: float = Field(
        0.2, gt=0, lt=1, description="budget_split: share of the labelled subset that selects"
    )
    gate_margin: float = Field(
        0.0, ge=0, description="gain in gate_val_acc a new version needs over the champion"
    )

    @field_validator("label_fractions", "seeds")
    @classmethod
    def _unique(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError("values are listed twice")
        return sorted(v)


class BackboneConfig(Frozen):
    """A timm backbone: `timm.create_model(arch, in_chans=<data channels>, **kwargs)`."""

    arch: str = Field(min_length=1, description="a timm model name, e.g. resnet10t")
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="timm.create_model keyword arguments (sizes, depth)"
    )
    small_input: bool = Field(
        True, description="ResNet family: drop the stem max-pool for 28x28 inputs (ViT: no-op)"
    )


DEFAULT_BACKBONES = {
    "resnet": {"arch": "resnet10t", "kwargs": {"channels": [16, 32, 64, 128], "stem_width": 16}},
    "vit": {
        "arch": "vit_tiny_patch16_224",
        "kwargs": {
            "img_size": 28,
            "patch_size": 7,
            "depth": 4,
            "embed_dim": 64,
            "num_heads": 2,
            "global_pool": "avg",
            "class_token": False,
        },
    },
}


def _label(v: str) -> str:
    if not v.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"label {v!r} must be letters, digits, '-' or '_'")
    return v


class TransferConfig(Frozen):
    """The sweep the transfer stages share (source -> features -> finetune): which backbones, the
    target task, and the label budgets and seeds every arm is measured at."""

    backbones: dict[str, BackboneConfig] = Field(
        default_factory=lambda: dict(DEFAULT_BACKBONES), min_length=1
    )
    target: str = Field("mnist", description="the target task (features and finetune)")
    label_fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: [0.01, 0.1, 1.0], min_length=1
    )
    seeds: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [0, 1, 2], min_length=1
    )
    val_fraction: float = Field(
        0.1, gt=0, lt=1, description="labelled monitor split: curves, and the gate at f = 1"
    )
    max_train: int | None = Field(None, ge=10, description="cap on target training images")
    max_test: int | None = Field(None, ge=10, description="cap on target test images")
    convergence_level: float = Field(
        0.95, gt=0, le=1, description="epochs to reach this share of the best accuracy"
    )

    @field_validator("backbones")
    @classmethod
    def _labels(cls, v: dict[str, Any]) -> dict[str, Any]:
        for label in v:
            _label(label)
        return v

    @field_validator("label_fractions", "seeds")
    @classmethod
    def _unique(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError("values are listed twice")
        return sorted(v)


class SourceStageConfig(TrainSettings):
    """Pretrains each backbone on the large labelled source task (or loads its weights)."""

    dataset: str = Field("synchars", description="the source task (a data source)")
    pretrained: str = Field(
        "source",
        description="source: train here on `dataset`; hub: timm's weights (online only); "
        "or a path to a checkpoint (.pt state_dict, loaded with weights_only=True)",
    )
    warmup_steps: int = Field(100, ge=0, description="linear learning-rate warm-up")
    patience: int | None = Field(None, ge=1, description="fixed epochs: no early stopping")
    max_test: int | None = Field(None, ge=10, description="cap on source test images")
    gate_margin: float = Field(0.0, ge=0, description="source val accuracy gain over champion")

    @field_validator("pretrained")
    @classmethod
    def _pretrained(cls, v: str) -> str:
        if v in ("source", "hub"):
            return v
        path = Path(v)
        if not path.is_file():
            raise ValueError(
                "expected 'source', 'hub' or the path of an existing checkpoint file "
                f"({path} does not exist)"
            )
        return v


class FeaturesStageConfig(Frozen):
    """Feature extraction: the frozen backbone embeds each dataset; linear heads on the features."""

    datasets: list[str] = Field(default_factory=lambda: ["mnist", "digits"], min_length=1)
    head_epochs: int = Field(30, ge=1, le=10_000, description="torch linear head budget")
    head_lr: float = Field(1e-2, gt=0, le=10)
    head_batch_size: int = Field(256, ge=1, le=65_536)
    head_weight_decay: float = Field(0.0, ge=0)
    logreg_c: float = Field(1.0, gt=0, description="sklearn LogisticRegression C")
    max_test: int | None = Field(None, ge=10, description="cap on test images per dataset")
    tsne_points: int = Field(500, ge=0, description="points in each t-SNE plot (0: no plot)")

    @field_validator("datasets")
    @classmethod
    def _unique(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError("datasets are listed twice")
        return v


class FixedBudget(Frozen):
    """A fixed training budget: no early stopping, no checkpoint selection (no labels spent on it).
    The data split comes from the section that owns it (e.g. `transfer`)."""

    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=65_536)
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    amp: bool = Field(True, description="mixed precision when on CUDA (ignored on CPU)")
    log_every: int = Field(20, ge=1, description="steps between loss syncs / progress updates")

    @property
    def patience(self) -> None:  # Trainer.from_settings reads these: a fixed budget never stops
        return None

    @property
    def min_delta(self) -> float:
        return 0.0


class FinetuneStageConfig(FixedBudget):
    """Fine-tuning (unfreeze the last N blocks) vs scratch (same net, random init, same budget);
    the feature-extraction arm (linear head on frozen features) is measured beside them."""

    unfreeze: int | Literal["all"] = Field(
        "all", description="blocks trained from the top (all: every layer, the stem too)"
    )
    layer_decay: float = Field(
        0.7, gt=0, le=1, description="lr of block k from the top = lr * layer_decay**k"
    )
    warmup_steps: int = Field(20, ge=0, description="linear learning-rate warm-up")
    min_steps: int = Field(
        60, ge=1, description="step floor per run (small label budgets get more epochs)"
    )
    weight_decay: float = Field(0.05, ge=0)
    gate_margin: float = Field(0.0, ge=0, description="gate_val_acc gain over the champion")

    @field_validator("unfreeze")
    @classmethod
    def _unfreeze(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("unfreeze at least 1 block (0 = feature extraction, its own arm)")
        return v


def _da_method_names() -> list[str]:
    from adaptflow.methods.da import DA_METHODS

    return DA_METHODS.names()


class DAPairConfig(Frozen):
    """A labelled source domain and an unlabelled target domain (two data sources), one task."""

    source: str = Field(min_length=1, description="a data source name (labelled)")
    target: str = Field(
        min_length=1,
        description="a data source name; its labels score the models and check the class set "
        "(and stratify its train/test split when the file has none): they never train (but "
        "target_oracle) or select",
    )
    side: int | None = Field(
        None, ge=8, le=256, description="common image side (None: the larger); vectors: unused"
    )
    standardize: Literal["none", "source", "per_domain"] = Field(
        "none",
        description="feature vectors only: z-score with the source's statistics (source) or each "
        "domain's own (per_domain); never with target labels",
    )
    protocol: Literal["split", "transductive"] = Field(
        "split",
        description="split: the target's test split is held out and scored; transductive: the "
        "unlabelled target set (train + test) is what is adapted to and scored",
    )
    reference: str | None = Field(
        None, description="published numbers to show beside this pair (a key of da.REFERENCES)"
    )
    steps: int | None = Field(
        None, ge=1, description="optimizer steps per run for this pair (None: da.steps)"
    )


class DAStageConfig(Frozen):
    """Domain adaptation (seed Q6): every method x pair x seed, selected without target labels.
    A run's budget is `steps` optimizer steps, each on a source batch + a target batch."""

    pairs: dict[str, DAPairConfig] = Field(
        default_factory=lambda: {"syn2mnist": DAPairConfig(source="syndigits", target="mnist")},
        min_length=1,
    )
    methods: list[str] = Field(
        default_factory=lambda: ["source_only", "mmd", "coral", "dann", "mcc"], min_length=1
    )
    seeds: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [0, 1, 2], min_length=1
    )
    featurizer: str = Field(
        "auto",
        description="auto (LeNet for images, MLP for vectors) | lenet | mlp | a transfer.backbones"
        " label (timm)",
    )
    feature_dim: int = Field(128, ge=2, le=4096, description="LeNet / MLP feature size")
    init: Literal["random", "source"] = Field(
        "random",
        description="timm featurizer only: random init, or the weights of the `source` stage's "
        "registered model for that backbone (models:/<prefix>-source@champion-<label>)",
    )
    steps: int = Field(1000, ge=1, description="optimizer steps per run (source + target batch)")
    checkpoints: int = Field(
        4, ge=1, le=100, description="evenly spaced candidate checkpoints per run (the last too)"
    )
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-method Config (e.g. {mcc: {temperature: 2.5}})"
    )
    grid: dict[str, dict[str, list[Any]]] = Field(
        default_factory=dict,
        description="per-method hyper-parameter grid (e.g. {dann: {weight: [0.3, 1.0]}}), "
        "chosen by `selection` like the checkpoints",
    )
    selection: Literal["dev", "iwcv", "snd", "entropy", "source_val"] = Field(
        "dev", description="the unsupervised criterion that picks checkpoint and grid point"
    )
    select_points: int = Field(
        1000, ge=20, description="unlabelled target images (and source val) each score uses"
    )
    val_fraction: float = Field(
        0.1, gt=0, lt=1, description="source validation split (source labels: free)"
    )
    max_train: int | None = Field(None, ge=10, description="cap on source training examples")
    max_target: int | None = Field(None, ge=10, description="cap on unlabelled target examples")
    max_test: int | None = Field(None, ge=10, description="cap on scored test examples")
    tsne_points: int = Field(500, ge=0, description="points per domain in t-SNE plots (0: none)")
    gate_margin: float = Field(0.0, ge=0, description="gate score gain over the champion")
    batch_size: int = Field(64, ge=2, le=65_536, description="per domain (source + target)")
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    amp: bool = Field(True, description="mixed precision when on CUDA (ignored on CPU)")
    log_every: int = Field(20, ge=1, description="steps between loss syncs / progress updates")

    @field_validator("pairs", mode="before")
    @classmethod
    def _drop_null_pairs(cls, v: Any) -> Any:
        """`label: null` removes a pair (a profile or --set dropping one of the defaults)."""
        return {k: p for k, p in v.items() if p is not None} if isinstance(v, dict) else v

    @field_validator("pairs")
    @classmethod
    def _pair_labels(cls, v: dict[str, Any]) -> dict[str, Any]:
        for label in v:
            _label(label)
        return v

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, v: list[str]) -> list[str]:
        names = _da_method_names()
        for m in v:
            if m not in names:
                raise ValueError(f"unknown da method {m!r}; valid: {', '.join(names)}")
        if len(set(v)) != len(v):
            raise ValueError("methods are listed twice")
        return v

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError("values are listed twice")
        return sorted(v)

    @model_validator(mode="after")
    def _methods_configs(self) -> DAStageConfig:
        from adaptflow.methods.da import DA_METHODS

        for section in ("options", "grid"):
            for m in getattr(self, section):
                if m not in DA_METHODS.names():
                    raise ValueError(f"{section}: unknown da method {m!r}")
        for m, grid in self.grid.items():
            cfg = DA_METHODS.get(m).Config
            for key, values in grid.items():
                if key not in cfg.model_fields:
                    raise ValueError(
                        f"grid.{m}: {key!r} is not an option of {m} "
                        f"(options: {', '.join(cfg.model_fields)})"
                    )
                if not values:
                    raise ValueError(f"grid.{m}.{key}: give at least one value")
        if self.init == "source" and self.featurizer in ("auto", "lenet", "mlp"):
            raise ValueError(
                "init: source needs a timm featurizer (a transfer.backbones label), not "
                f"{self.featurizer!r}"
            )
        for m in self.methods:
            base = self.options.get(m, {})
            for point in grid_points(self.grid.get(m, {})):
                try:
                    DA_METHODS.get(m).Config(**(base | point))
                except ValueError as e:
                    raise ValueError(f"options/grid of {m}: {e}") from None
        return self


# ---------------------------------------------------------------- gan and seq (seed Q7, Q8)
Seeds = list[Annotated[int, Field(ge=0)]]


def _unique_list(v: list, what: str) -> list:
    if len(set(v)) != len(v):
        raise ValueError(f"{what} are listed twice")
    return v


class GANAugmentConfig(Frozen):
    """The seed's "data augmentation" use: a digit classifier trained on a small labelled set
    with and without the samples of a conditional GAN trained on that same set (its labels are
    the budget: nothing else labelled is touched)."""

    fraction: float = Field(
        0.01, gt=0, le=0.01, description="labelled share of the training split (<= 1 %)"
    )
    seeds: Seeds = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    gan_steps: int = Field(600, ge=1, description="cGAN updates on the labelled set")
    gan_lr: float = Field(
        2e-4,
        gt=0,
        le=10,
        description="the cGAN's Adam learning rate (G and D): DCGAN's published value, fixed "
        "up front; not gan.lr_g/lr_d, which were chosen on every training label",
    )
    per_class: int = Field(100, ge=1, description="generated images added per class")
    classifier_steps: int = Field(
        300, ge=1, description="classifier updates, the same with and without (no selection)"
    )
    batch_size: int = Field(64, ge=1, le=65_536)
    lr: float = Field(1e-3, gt=0, le=10, description="classifier learning rate (Adam)")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list) -> list:
        return _unique_list(v, "seeds")


class GANStageConfig(Frozen):
    """DCGAN and its conditional variant on 28x28 digits, scored with a classifier trained here."""

    dataset: str = Field("mnist", description="an image source of 1x28x28 digits")
    variants: list[Literal["dcgan", "cgan"]] = Field(
        default_factory=lambda: ["dcgan", "cgan"], min_length=1
    )
    register_variant: Literal["dcgan", "cgan"] = Field(
        "cgan", description="whose generator (first seed) registers as <prefix>-gan"
    )
    seeds: Seeds = Field(default_factory=lambda: [0, 1], min_length=1)
    z_dim: int = Field(64, ge=1, le=4096)
    channels: int = Field(32, ge=1, le=1024, description="width of G's and D's conv layers")
    d_steps: int = Field(1, ge=1, le=20, description="D updates per G update (D:G step ratio)")
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(64, ge=2, le=65_536)
    lr_g: float = Field(1e-3, gt=0, le=10)
    lr_d: float = Field(1e-3, gt=0, le=10)
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1 (DCGAN: 0.5)")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="held-out real images: the gate")
    max_train: int | None = Field(None, ge=10)
    max_test: int | None = Field(None, ge=10)
    collapse_epochs: int = Field(
        5, ge=1, description="D winning outright this many epochs in a row fails the run"
    )
    collapse_acc: float = Field(
        0.995, gt=0.5, le=1, description="D 'wins outright': accuracy >= this on real and fake"
    )
    collapse_g_loss: float = Field(
        8.0, gt=0, description="... and G's loss >= this (D(G(z)) < e^-8 = 0.03 %)"
    )
    real_label: float = Field(
        1.0, gt=0.5, le=1, description="D's target for real images (< 1: one-sided smoothing)"
    )
    d_dropout: float = Field(0.0, ge=0, lt=1, description="dropout after D's conv blocks")
    eval_samples: int = Field(
        1000,
        ge=10,
        description="cap on the images of each test Fréchet set (n = min(this, test images / "
        "2): n generated vs the same n real test images; the validation distance uses every "
        "validation image)",
    )
    classifier_epochs: int = Field(15, ge=1, description="the evaluator digit classifier")
    augment: GANAugmentConfig = Field(default_factory=GANAugmentConfig)
    amp: bool = True
    log_every: int = Field(20, ge=1)
    gate_margin: float = Field(0.0, ge=0, description="val Fréchet distance gain over champion")

    @field_validator("variants", "seeds")
    @classmethod
    def _unique(cls, v: list) -> list:
        return _unique_list(v, "values")

    @model_validator(mode="after")
    def _registered(self) -> GANStageConfig:
        if self.register_variant not in self.variants:
            raise ValueError(
                f"register_variant {self.register_variant!r} is not in variants {self.variants}"
            )
        return self


class SeqModelConfig(Frozen):
    """Sizes of the sequence models compared on MNIST-1D."""

    d_model: int = Field(64, ge=2, le=4096, description="Transformer width")
    heads: int = Field(4, ge=1, le=64)
    layers: int = Field(2, ge=1, le=48)
    d_ff: int = Field(128, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    positional: Literal["sinusoidal", "learned"] = "sinusoidal"
    pooling: Literal["cls", "mean"] = "cls"
    pre_norm: bool = False
    hidden: int = Field(64, ge=1, le=4096, description="LSTM / GRU hidden size")
    cnn_channels: int = Field(32, ge=1, le=4096, description="1-D CNN width")

    @model_validator(mode="after")
    def _heads(self) -> SeqModelConfig:
        if self.d_model % self.heads:
            raise ValueError(f"d_model = {self.d_model} is not divisible by heads = {self.heads}")
        return self


class SeqStageConfig(Frozen):
    """Own Transformer vs LSTM / GRU / 1-D CNN / logistic regression on a sequence task, the
    parallel-vs-sequential timing, and a ViT vs a CNN on images (timm builder)."""

    dataset: str = Field("mnist1d", description="a sequence source (kind mnist1d)")
    models: list[Literal["transformer", "lstm", "gru", "cnn", "logreg"]] = Field(
        default_factory=lambda: ["transformer", "lstm", "gru", "cnn", "logreg"], min_length=2
    )
    seeds: Seeds = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    model: SeqModelConfig = Field(default_factory=SeqModelConfig)
    epochs: int = Field(30, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=65_536)
    lr: float = Field(2e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    val_fraction: float = Field(0.1, gt=0, lt=1, description="the gate of the registered model")
    max_train: int | None = Field(None, ge=10)
    max_test: int | None = Field(None, ge=10)
    logreg_c: float = Field(1.0, gt=0)
    timing_lengths: list[Annotated[int, Field(ge=2, le=100_000)]] = Field(
        default_factory=lambda: [40, 80, 160, 320, 640],
        description="sequence lengths (by resampling) of the parallel-vs-sequential timing; "
        "[] skips it",
    )
    timing_batches: int = Field(5, ge=1, description="timed training steps per length and model")
    timing_repeats: int = Field(3, ge=1, description="repeats (the verdict's samples)")
    image_dataset: str | None = Field("mnist", description="ViT vs CNN on images; null: skip")
    image_models: dict[str, BackboneConfig] = Field(
        default_factory=lambda: {
            "vit": DEFAULT_BACKBONES["vit"],
            "cnn": DEFAULT_BACKBONES["resnet"],
        }
    )
    image_epochs: int = Field(3, ge=1, le=10_000)
    image_seeds: Seeds = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    amp: bool = True
    log_every: int = Field(20, ge=1)
    gate_margin: float = Field(0.0, ge=0, description="val accuracy gain over the champion")

    @field_validator("models", "seeds", "image_seeds", "timing_lengths")
    @classmethod
    def _unique(cls, v: list) -> list:
        return _unique_list(v, "values")

    @field_validator("image_models")
    @classmethod
    def _labels(cls, v: dict[str, Any]) -> dict[str, Any]:
        for label in v:
            _label(label)
        return v

    @model_validator(mode="after")
    def _transformer(self) -> SeqStageConfig:
        if "transformer" not in self.models:
            raise ValueError("models must include transformer (the stage registers it)")
        return self


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of a method's grid ({} -> one point: the options as given)."""
    import itertools

    keys = sorted(grid)
    return [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*map(grid.get, keys))
    ]


# ---------------------------------------------------------------- orchestration
class RetryConfig(Frozen):
    """Prefect retries of a stage task, for transient failures only (adaptflow.retry)."""

    count: int = Field(2, ge=0, le=20, description="retries after the first attempt (0: none)")
    delay_seconds: float = Field(30.0, ge=0, le=3600, description="wait before each retry")


class RunnerConfig(Frozen):
    """Where a stage's sweep units (method x seed x pair, fraction x seed ...) run: Prefect
    tasks mapped over a task runner (adaptflow.sweep). `local`: one after another in the
    pipeline's process. `dask`: prefect_dask.DaskTaskRunner on a local cluster of `workers`
    processes, or on the existing Dask cluster at `address`. Results do not depend on it."""

    kind: Literal["local", "dask"] = "local"
    address: str | None = Field(
        None, description="scheduler of an existing Dask cluster (tcp://host:8786); None: local"
    )
    workers: int = Field(2, ge=1, le=256, description="processes of the local Dask cluster")
    dashboard: str = Field(
        "127.0.0.1:0", description="where the local cluster's dashboard listens (:0 any port)"
    )

    @model_validator(mode="before")
    @classmethod
    def _bare_kind(cls, v: Any) -> Any:
        return {"kind": v} if isinstance(v, str) else v  # `runner: dask`, `--set runner=dask`

    @model_validator(mode="after")
    def _loopback_dashboard(self) -> RunnerConfig:
        host = self.dashboard.rpartition(":")[0]
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError(
                f"runner.dashboard = {self.dashboard!r}: the dashboard binds 127.0.0.1 only "
                "(e.g. 127.0.0.1:8787); reach it from elsewhere through an SSH tunnel"
            )
        if self.address is not None and self.kind != "dask":
            raise ValueError("runner.address is set but runner.kind is not dask; set both")
        return self


class ScheduleConfig(Frozen):
    """The pipeline served as a Prefect deployment (`make schedule`, flows/schedule.py)."""

    name: str = Field("nightly", pattern=r"^[A-Za-z0-9_-]+$", description="deployment name")
    cron: str = Field("0 2 * * *", min_length=1, description="when, as a cron expression")
    timezone: str = Field("UTC", description="an IANA time zone the cron is read in")
    profile: str = Field("default", description="the profile each scheduled run uses")
    overrides: list[str] = Field(default_factory=list, description="--set KEY=VALUE of each run")
    stages: list[str] | None = Field(None, description="only these stages (None: all)")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {v!r} (IANA names, e.g. UTC, Europe/Berlin)"
            ) from None
        return v

    @field_validator("overrides")
    @classmethod
    def _key_values(cls, v: list[str]) -> list[str]:
        for item in v:
            if "=" not in item:
                raise ValueError(f"{item!r} is not KEY=VALUE")
            if item.split("=", 1)[0].strip() == "profile":
                raise ValueError("set the profile with schedule.profile, not in overrides")
        return v


class Params(Frozen):
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    profile: str = "default"
    experiment: str = Field("adaptflow", min_length=1)
    registry_prefix: str = Field(
        "adaptflow", pattern=r"^[A-Za-z0-9_-]+$", description="models register as <prefix>-<stage>"
    )
    data: DataConfig
    ae: AEStageConfig = Field(default_factory=AEStageConfig)
    pretrain: PretrainStageConfig = Field(default_factory=PretrainStageConfig)
    transfer: TransferConfig = Field(default_factory=TransferConfig)
    source: SourceStageConfig = Field(default_factory=SourceStageConfig)
    features: FeaturesStageConfig = Field(default_factory=FeaturesStageConfig)
    finetune: FinetuneStageConfig = Field(default_factory=FinetuneStageConfig)
    da: DAStageConfig = Field(default_factory=DAStageConfig)
    gan: GANStageConfig = Field(default_factory=GANStageConfig)
    seq: SeqStageConfig = Field(default_factory=SeqStageConfig)
    retries: RetryConfig = Field(default_factory=RetryConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    on_stage_failure: Literal["stop", "continue"] = Field(
        "stop",
        description="a stage that fails (a NaN loss, bad data, a bug): stop the pipeline there, "
        "or continue with the stages that do not depend on it; either way the summary lists "
        "it and the pipeline exits 1",
    )
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _schedule_profile(self) -> Params:
        if self.schedule.profile != "default" and self.schedule.profile not in self.profiles:
            valid = ", ".join(["default", *sorted(self.profiles)])
            raise ValueError(
                f"schedule.profile: unknown profile {self.schedule.profile!r}; valid: {valid}"
            )
        return self

    def stage(self, name: str) -> Frozen:
        return getattr(self, name)

    def model_name(self, stage: str) -> str:
        return f"{self.registry_prefix}-{stage}"


# ---------------------------------------------------------------- loading
def _parse_value(text: str) -> Any:
    """`--set` values are YAML scalars/lists: 3 -> int, 1e-3 -> float, [64,32] -> list."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ParamsError(f"--set value {text!r} is not valid YAML: {e}") from None


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for i, k in enumerate(keys[:-1]):
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ParamsError(f"--set {dotted}: {'.'.join(keys[: i + 1])} is not a section")
        node = nxt
    node[keys[-1]] = value


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ParamsError(f"--set {item!r}: expected KEY=VALUE, e.g. --set ae.epochs=3")
        out[key.strip()] = _parse_value(raw)
    return out


def _deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in overlay.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        if loc[:2] == ["data", "sources"] and len(loc) > 3:
            del loc[3]  # pydantic adds the union tag ('mnist', 'npz', ...) after the source name
        path = ".".join(loc) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key (check spelling; see params.yaml for valid keys)")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        if not loc:  # a rule across sections: its message names the keys (the input is all)
            lines.append(msg)
            continue
        lines.append(f"{path} = {e.get('input')!r}: {msg}")
    return "invalid params:\n  " + "\n  ".join(lines)


PROFILE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def _checked_profiles(profiles: Any) -> dict[str, Any]:
    """`profiles` as read: a mapping of file-safe names (they name output files such as
    reports/metrics-<profile>.json) to overlays (mappings, or empty)."""
    if profiles is None:
        return {}
    if not isinstance(profiles, dict):
        raise ParamsError(
            f"invalid params:\n  profiles = {profiles!r}: must map profile names to overlays, "
            "e.g. profiles: {smoke: {ae: {epochs: 1}}}"
        )
    for name, overlay in profiles.items():
        if not isinstance(name, str) or not PROFILE_NAME.match(name):
            raise ParamsError(
                f"invalid params:\n  profiles.{name}: a profile name must be letters, digits, "
                "'-' or '_' (it names output files)"
            )
        if overlay is not None and not isinstance(overlay, dict):
            raise ParamsError(
                f"invalid params:\n  profiles.{name} = {overlay!r}: must be a mapping of "
                "sections laid over the defaults"
            )
    return profiles


def build_params(raw: dict[str, Any], overrides: dict[str, Any] | None = None) -> Params:
    overrides = overrides or {}
    tree = copy.deepcopy(raw)
    for k, v in overrides.items():
        _set_path(tree, k, v)
    profile = tree.get("profile", "default")
    profiles = _checked_profiles(tree.get("profiles"))
    if not isinstance(profile, str):
        raise ParamsError(
            f"invalid params:\n  profile = {profile!r}: must be a profile name (default or a "
            "key of profiles)"
        )
    if profile != "default":
        if profile not in profiles:
            valid = ", ".join(["default", *sorted(profiles)])
            raise ParamsError(
                f"invalid params:\n  profile = {profile!r}: unknown profile; valid: {valid}"
            )
        overlay = profiles[profile] or {}
        if "data" in overlay:
            raise ParamsError(
                f"invalid params:\n  profiles.{profile}.data: profiles may not change data "
                "(prepared data is shared by every profile; cap sizes with <stage>.max_train)"
            )
        tree = _deep_merge(tree, overlay)
        for k, v in overrides.items():
            _set_path(tree, k, v)
    try:
        params = Params.model_validate(tree)
    except ValidationError as e:
        raise ParamsError(_format_error(e)) from None
    base_prefix = raw.get("registry_prefix", Params.model_fields["registry_prefix"].default)
    if params.profile != "default" and params.registry_prefix == base_prefix:
        # a toy profile's models must never compete for the production champion alias
        raise ParamsError(
            f"invalid params:\n  registry_prefix = {params.registry_prefix!r}: profile "
            f"{params.profile!r} may not register under the default profile's prefix "
            f"{base_prefix!r} (use e.g. {base_prefix}-{params.profile})"
        )
    _check_cross_refs(params)
    return params


def _check_cross_refs(p: Params) -> None:
    # kinds whose examples are (C, L) sequences: an image stage fails on them at its first layer.
    # What needs the prepared data (classes, image side, size) is in stages/validate.py.
    sequence_kinds = {"mnist1d"}
    images = [n for n, s in p.data.sources.items() if s.kind not in sequence_kinds]
    image_refs = [
        ("ae.dataset", p.ae.dataset),
        ("pretrain.dataset", p.pretrain.dataset),
        ("source.dataset", p.source.dataset),
        ("transfer.target", p.transfer.target),
        ("gan.dataset", p.gan.dataset),
        *((("seq.image_dataset", p.seq.image_dataset),) if p.seq.image_dataset else ()),
        *((f"features.datasets[{i}]", d) for i, d in enumerate(p.features.datasets)),
    ]
    for key, dataset in image_refs:  # the image stages
        stage = key.split(".")[0]
        if dataset not in p.data.sources:
            raise ParamsError(
                f"invalid params:\n  {key} = {dataset!r}: not a data source; "
                f"valid: {', '.join(p.data.sources)}"
            )
        if p.data.sources[dataset].kind in sequence_kinds:
            raise ParamsError(
                f"invalid params:\n  {key} = {dataset!r}: a sequence source (kind "
                f"{p.data.sources[dataset].kind}), {stage} needs images; "
                f"image sources: {', '.join(images) or 'none configured'}"
            )
    seq_source = p.data.sources.get(p.seq.dataset)
    if seq_source is None or seq_source.kind not in sequence_kinds:
        found = "not a data source" if seq_source is None else f"kind {seq_source.kind}"
        sequences = [n for n, s in p.data.sources.items() if s.kind in sequence_kinds]
        raise ParamsError(
            f"invalid params:\n  seq.dataset = {p.seq.dataset!r}: {found}; seq needs a sequence "
            f"source (kind mnist1d): {', '.join(sequences) or 'none configured'}"
        )
    for label, pc in p.da.pairs.items():
        for role in ("source", "target"):
            name = getattr(pc, role)
            if name not in p.data.sources:
                raise ParamsError(
                    f"invalid params:\n  da.pairs.{label}.{role} = {name!r}: not a data source; "
                    f"valid: {', '.join(p.data.sources)}"
                )
            if p.data.sources[name].kind in sequence_kinds:
                raise ParamsError(
                    f"invalid params:\n  da.pairs.{label}.{role} = {name!r}: a sequence source; "
                    "da pairs need images or feature vectors"
                )
        if pc.reference is not None:
            from adaptflow.stages.da_report import REFERENCES

            if pc.reference not in REFERENCES:
                raise ParamsError(
                    f"invalid params:\n  da.pairs.{label}.reference = {pc.reference!r}: "
                    f"valid: {', '.join(REFERENCES)}"
                )
    if max(p.transfer.label_fractions) < 1.0:
        raise ParamsError(
            f"invalid params:\n  transfer.label_fractions = {p.transfer.label_fractions}: the "
            "largest fraction must be 1.0 (the registry gate measures the f=1 models on the "
            "monitor split, inside that budget only); append 1.0"
        )
    _check_pretrain(p.pretrain)
    if p.ae.register_method not in p.ae.methods or p.ae.register_method == "pca":
        raise ParamsError(
            f"invalid params:\n  ae.register_method = {p.ae.register_method!r}: "
            "must be one of ae.methods "
            "that trains a torch model"
        )
    bad = [m for m in p.ae.anomaly_methods if m not in p.ae.methods]
    if bad and p.ae.anomaly_digit is not None:
        raise ParamsError(
            f"invalid params:\n  ae.anomaly_methods = {p.ae.anomaly_methods}: {bad} not in "
            f"ae.methods {p.ae.methods}; list methods that run (or set ae.anomaly_digit: null)"
        )
    from adaptflow.methods.ae import AE_METHODS

    for name, opts in p.ae.options.items():
        if name not in AE_METHODS:
            raise ParamsError(
                f"invalid params:\n  ae.options.{name}: unknown ae method; "
                f"valid: {', '.join(AE_METHODS.names())}"
            )
        try:
            AE_METHODS.get(name).Config.model_validate(opts)
        except ValidationError as e:
            raise ParamsError(_format_error(e).replace("\n  ", f"\n  ae.options.{name}.")) from None


def _check_pretrain(cfg: PretrainStageConfig) -> None:
    from adaptflow.methods.pretrain import LAYER_METHODS

    try:
        LAYER_METHODS.get(cfg.layer_method).Config.model_validate(cfg.layer_options)
    except ValidationError as e:
        raise ParamsError(_format_error(e).replace("\n  ", "\n  pretrain.layer_options.")) from None
    if cfg.layer_method in ("rbm", "sparse") and cfg.activation != "sigmoid":
        raise ParamsError(
            f"invalid params:\n  pretrain.activation = {cfg.activation!r}: layer_method "
            f"{cfg.layer_method!r} needs sigmoid units"
        )
    if cfg.selection == "last_epoch" and cfg.patience is not None:
        raise ParamsError(
            f"invalid params:\n  pretrain.patience = {cfg.patience}: early stopping selects an "
            "epoch; with pretrain.selection: last_epoch it must be null (or use budget_split)"
        )
    if max(cfg.label_fractions) < 1.0:
        raise ParamsError(
            f"invalid params:\n  pretrain.label_fractions = {cfg.label_fractions}: the largest "
            "fraction must be 1.0 (the registry gate measures the f=1 model on the monitor split, "
            "inside its budget; a partial budget's selection split already chose the checkpoint "
            "and would bias the gate); append 1.0"
        )


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(
            f"params file {path} not found (run from the project root or pass --params)"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path} is not valid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise ParamsError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ParamsError(f"params file {path} cannot be read: {e.strerror}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must hold a mapping of sections, got {type(raw).__name__}")
    return build_params(raw, parse_overrides(overrides))
