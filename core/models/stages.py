"""Where a bundle's network splits into a stem that other bundles share and a rest of its own.

The yes/no brain bundle is a Dense layer on the 4-class bundle's network, and an ultrasound
classifier can be a head on the ultrasound segmenter's encoder and lesion map (the lesion-pooled
head, a config option). Run as whole models, an image that goes to both bundles of a pair passes
the shared network twice. Split here, the Analyzer runs each stem once per image and every
bundle's own rest on its outputs. A classifier's rest takes its Grad-CAM activation as first
input, so the heatmap needs gradients through the rest alone. Networks of any other shape get no
stem: the rest is the whole model.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stages:
    """``stem``: image -> the tensors ``rest`` takes; ``rest``: those -> the bundle's output.

    Bundles whose stems share a ``key`` share the stem itself (same weights, same cut); ``key`` and
    ``stem`` are None where the rest takes the image.
    """

    key: str | None
    stem: object | None
    rest: object


def split_stages(bundle_id: str, sha256: str, task: str, arch: dict, cam_layer: str | None, model,
                 parent: Stages | None) -> Stages:
    """The stages of a loaded bundle model; ``parent``'s stages for a bundle built on another."""
    whole = Stages(None, None, model)
    try:
        if parent is not None:
            if parent.stem is None:
                return whole
            if arch.get("feature_bundle_task") == "segmentation":  # image -> features -> head
                head = model.layers[-1]
                # Grad-CAM explains the rest's first input: the head's CAM layer must take exactly that.
                explains_input = head.get_layer(cam_layer).input is head.inputs[0]
                return Stages(parent.key, parent.stem, head) if explains_input else whole
            if not parent.key.endswith(f":{cam_layer}"):
                return whole
            return Stages(parent.key, parent.stem, _rest_on_classifier(parent, arch["feature_layer"], model.layers[-1]))
        if task == "segmentation":
            return _segmenter_stages(bundle_id, sha256, model) or whole
        if (arch.get("backbone_file") or arch.get("trunk_file")) and cam_layer:
            return _classifier_stages(bundle_id, sha256, cam_layer, model) or whole
    except ValueError:  # a network of another shape than the ones training writes
        return whole
    return whole


def _segmenter_stages(bundle_id: str, sha256: str, model) -> Stages | None:
    """Encoder + U-Net decoder: the stem gives the deepest encoder map and the lesion map, which a
    classifier on this segmenter pools; the segmenter's own rest passes the lesion map on."""
    import keras

    from core.models.lesion_pooling import segmenter_features

    stem = segmenter_features(model)
    deepest, probability = (keras.Input(shape=t.shape[1:]) for t in stem.outputs)
    rest = keras.Model([deepest, probability], keras.layers.Identity(name="lesion_probability")(probability),
                       name=f"{model.name}_mask")
    return Stages(f"{bundle_id}@{sha256[:16]}:features", stem, rest)


def _classifier_stages(bundle_id: str, sha256: str, cam_layer: str, model) -> Stages | None:
    """Frozen trunk + trained part: the stem ends at the Grad-CAM layer's output."""
    import keras

    image_input, trunk, part = model.layers
    chain = _chain(part)
    ends = [i for i, layer in enumerate(chain) if _ends_at(layer, cam_layer)]
    if not ends:
        return None
    image = keras.Input(shape=image_input.output.shape[1:], name="image")
    activation = _run(chain[: ends[0] + 1], trunk(image))
    stem = keras.Model(image, activation, name=f"{bundle_id}_stem")
    cut = keras.Input(shape=activation.shape[1:], name=cam_layer)
    return Stages(f"{bundle_id}@{sha256[:16]}:{cam_layer}", stem,
                  keras.Model(cut, _run(chain[ends[0] + 1 :], cut), name=f"{bundle_id}_rest"))


def _rest_on_classifier(parent: Stages, feature_layer: str, part):
    """A transfer bundle: the parent's rest up to its pooled features, then this bundle's layers."""
    import keras

    parent_rest = _chain(parent.rest)
    names = [layer.name for layer in parent_rest]
    cut = keras.Input(shape=parent.rest.inputs[0].shape[1:], name=parent.rest.inputs[0].name)
    features = _run(parent_rest[: names.index(feature_layer) + 1], cut)
    return keras.Model(cut, part(features), name=f"{part.name}_rest")


def _chain(model) -> list:
    """The layers of a single-path model, input first; other shapes are refused."""
    import keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    # One node at every depth of the model's own graph (Keras keeps it by depth) is a single path.
    if len(model.inputs) != 1 or any(len(nodes) != 1 for nodes in model._nodes_by_depth.values()):
        raise ValueError(f"{model.name} is not a single chain of layers")
    return layers


def _run(layers: list, x):
    for layer in layers:
        x = layer(x)
    return x


def _ends_at(layer, name: str) -> bool:
    """``layer`` is the layer ``name`` or a sub-model whose last layer it is."""
    inner = getattr(layer, "layers", None)
    return layer.name == name or bool(inner) and inner[-1].name == name
