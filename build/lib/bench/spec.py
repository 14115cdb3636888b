"""DataSpec: the small description of a dataset that models and tasks read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

CLASSIFICATION_TASKS = ("binary-class", "multi-class", "multi-label", "ordinal-regression")
TASKS = (*CLASSIFICATION_TASKS, "segmentation")


@dataclass(frozen=True)
class DataSpec:
    """What a dataset looks like to a model.

    ``task`` uses MedMNIST's names (``multi-label`` stands for its ``multi-label, binary-class``);
    ``num_classes`` counts labels for multi-label data and classes (background included) for
    segmentation. ``input_size`` is the spatial size the model sees (after any resize).
    """

    name: str
    task: str
    spatial_dims: int
    in_channels: int
    num_classes: int
    input_size: tuple[int, ...]
    label_names: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")

    @property
    def kind(self) -> str:
        """``classification`` or ``segmentation``: which task module trains on it."""
        return "segmentation" if self.task == "segmentation" else "classification"

    @property
    def num_outputs(self) -> int:
        """Logits the model must produce (2 for binary: softmax over two, as MedMNIST does)."""
        return self.num_classes

    @classmethod
    def from_dict(cls, d: dict) -> DataSpec:
        return cls(
            **{
                **d,
                "input_size": tuple(d["input_size"]),
                "label_names": tuple(d.get("label_names") or ()),
            }
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["label_names"] = list(self.label_names)
        return d


def medmnist_task(task: str) -> str:
    """Map medmnist's task names onto ours."""
    return "multi-label" if task.startswith("multi-label") else task
