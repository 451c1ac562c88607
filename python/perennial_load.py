"""Load Perennial weights files and checkpoints into PyTorch (h5py + torch, no Perennial build).

    import perennial_load as pl
    model = pl.load_model("RUN/checkpoints/ckpt-0000000936.h5")   # or RUN/model.h5
    logits = model(images_uint8.float() / 255)

The file layout is documented in docs/checkpoint-format.md. build_model() mirrors
trainer/models/model_factory.cpp: the same nn.Sequential, so the state_dict names match.
"""
import configparser

import h5py
import numpy as np
import torch
from torch import nn


def read_config(path):
    """The resolved configuration recorded in the file, as a ConfigParser."""
    with h5py.File(path, "r") as f:
        text = f.attrs["config"]
    if isinstance(text, bytes):
        text = text.decode()
    cfg = configparser.ConfigParser()
    cfg.read_string(text)
    return cfg


def read_state_dict(path):
    """{name: tensor} from the file's /state_dict group, in state_dict order."""
    with h5py.File(path, "r") as f:
        g = f["state_dict"]
        order = g.attrs["order"]
        if isinstance(order, bytes):
            order = order.decode()
        return {name: torch.from_numpy(np.array(g[name])) for name in order.split("\n") if name}


def _ints(text):
    return [int(x) for x in text.split(",") if x.strip()]


def build_model(cfg, feature_shape, num_classes):
    """The nn.Sequential that Perennial builds for this configuration."""
    m = cfg["model"]
    dropout = float(m["dropout"])
    layers = []
    if m["arch"] == "mlp":
        layers.append(nn.Flatten())
        prev = int(np.prod(feature_shape))
        for h in _ints(m["hidden"]):
            layers += [nn.Linear(prev, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = h
        layers.append(nn.Linear(prev, num_classes))
    elif m["arch"] == "cnn":
        if len(feature_shape) == 2:
            channels, h, w = 1, feature_shape[0], feature_shape[1]
            layers.append(nn.Unflatten(1, (1, h)))
        else:
            channels, h, w = feature_shape
        k = int(m["kernel_size"])
        for out in _ints(m["conv_channels"]):
            layers += [nn.Conv2d(channels, out, k, padding=k // 2), nn.ReLU(), nn.MaxPool2d(2)]
            channels, h, w = out, h // 2, w // 2
        layers.append(nn.Flatten())
        prev = channels * h * w
        for f in _ints(m["fc_hidden"]):
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            layers += [nn.Linear(prev, f), nn.ReLU()]
            prev = f
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(prev, num_classes))
    else:
        raise ValueError(f"unknown arch {m['arch']}")
    return nn.Sequential(*layers)


def read_normalization(path):
    """(mean, std) tensors of the feature shape when the run normalised its features, else None.
    The model's input is then (x - mean) / std."""
    with h5py.File(path, "r") as f:
        if "normalization" not in f:
            return None
        return (torch.from_numpy(np.array(f["normalization/mean"])),
                torch.from_numpy(np.array(f["normalization/std"])))


def load_model(path, feature_shape=(28, 28), num_classes=10):
    """Builds the model recorded in PATH and loads its weights; returns it in eval mode."""
    model = build_model(read_config(path), feature_shape, num_classes)
    model.load_state_dict(read_state_dict(path))
    return model.eval()
