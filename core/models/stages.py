"""Where a bundle's network splits into a stem that other bundles share and a rest of its own.

The yes/no brain bundle is a Dense layer on the 4-class bundle's network, and an ultrasound
classifier can be a head on the ultrasound segmenter's encoder and lesion map (the lesion-pooled
head, a config option). Run as whole models, an image that goes to both bundles of a pair passes
the shared network twice. Split here, the Analyzer runs each stem once per image and every
bundle's own rest on its outputs. A classifier's rest takes its Grad-CAM activation as first
input, so the heatmap needs gradients through the rest alone. A segmenter whose frozen encoder is a
classifier bundle's network (its manifest's ``encoder_bundle``) runs on that classifier's stem too:
the stem also hands out the skip maps that lie below its cut (``taps``), and the segmenter's rest
computes the deeper ones from the Grad-CAM activation. Networks of any other shape get no stem: the
rest is the whole model.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stages:
    """``stem``: image -> the tensors ``rest`` takes; ``rest``: those -> the bundle's output.

    Bundles whose stems share a ``key`` share the stem itself (same weights, same cut); ``key`` and
    ``stem`` are None where the rest takes the image. ``cam``: the layer whose activation is the rest's
    first input, which Grad-CAM through the rest explains (None: the bundle's own Grad-CAM layer); a
    bundle explained at another layer takes its gradients through its whole model. ``picks``: the stem
    outputs the rest takes, by index (None: all of them), as a stem shared with a segmenter hands out more;
    ``taps``: the layers whose outputs end the stem's outputs, in that order (what a segmenter may take).
    """

    key: str | None
    stem: object | None
    rest: object
    cam: str | None = None
    picks: tuple[int, ...] | None = None
    taps: tuple[str, ...] = ()

    def pick(self, outputs: list) -> list:
        """The rest's inputs among the stem's ``outputs``."""
        return list(outputs) if self.picks is None else [outputs[i] for i in self.picks]


def cam_site(stages: Stages, layer: str, bundle_cam: str | None) -> str:
    """Where Grad-CAM at ``layer`` takes its gradients for a bundle whose own Grad-CAM layer is ``bundle_cam``:
    "input" (the activation the stem hands the rest), "rest" (a layer inside the rest: through the rest alone), or
    "image" (through the whole network from the image)."""
    if stages.stem is None:
        return "image"
    if layer == (stages.cam or bundle_cam):
        return "input"
    return "rest" if stages.rest is not None and contains(stages.rest, layer) else "image"


def split_stages(bundle_id: str, sha256: str, task: str, arch: dict, cam_layer: str | None, model,
                 parent: Stages | None, taps: tuple[str, ...] = ()) -> Stages:
    """The stages of a loaded bundle model; ``parent``'s stages for a bundle built on another (a segmenter:
    the bundle its encoder is). ``sha256``: of every file of its network (``Bundle.network_sha256``), which its
    stem's key names. ``taps``: layers whose outputs a classifier's stem also hands out where they lie below its
    cut (the skip maps of segmenters on its network)."""
    whole = Stages(None, None, model)
    try:
        if parent is not None and task == "segmentation":
            try:
                on_stem = _segmenter_on_stem(parent, model) if parent.stem is not None else None
            except ValueError:  # its encoder is another network than the parent's stem
                on_stem = None
            return on_stem or _segmenter_stages(bundle_id, sha256, model) or whole
        if parent is not None:
            if parent.stem is None:
                return whole
            if arch.get("feature_bundle_task") == "segmentation":  # image -> features -> head
                if parent.picks is not None:  # the segmenter runs on a classifier's stem: no features stem
                    return whole
                head = model.layers[-1]
                # Grad-CAM explains the rest's first input: the head's CAM layer must take exactly that.
                explains_input = head.get_layer(cam_layer).input is head.inputs[0]
                return Stages(parent.key, parent.stem, head, cam_layer) if explains_input else whole
            # The parent's stem whatever this bundle's Grad-CAM layer: where it is not the parent's cut
            # (``cam``), the Analyzer takes that bundle's gradients through its whole model.
            return Stages(parent.key, parent.stem, _rest_on_classifier(parent, arch["feature_layer"], model.layers[-1]),
                          parent.cam, parent.picks)
        if task == "segmentation":
            return _segmenter_stages(bundle_id, sha256, model) or whole
        # a frozen trunk below the Grad-CAM layer: a backbone file, a trunk file, or a film detector's joined members
        if (arch.get("backbone_file") or arch.get("trunk_file") or arch.get("members")) and cam_layer:
            return _classifier_stages(bundle_id, sha256, cam_layer, model, taps) or whole
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


def _classifier_stages(bundle_id: str, sha256: str, cam_layer: str, model, taps: tuple[str, ...]) -> Stages | None:
    """Frozen trunk + trained part: the stem ends at the Grad-CAM layer's output, wherever it lies (a
    sub-model's last layer or inside it), and hands the rest every other tensor that crosses the cut, then
    the outputs of the ``taps`` below the cut. The key names the network's files and the cut: one stem per key
    and Analyzer."""
    stem, rest, tapped = _cut(model, cam_layer, bundle_id, taps)
    picks = tuple(range(len(rest.inputs))) if tapped else None
    return Stages(f"{bundle_id}@{sha256[:16]}:{cam_layer}", stem, rest, cam_layer, picks, tapped)


def _segmenter_on_stem(parent: Stages, model) -> Stages | None:
    """Encoder + U-Net decoder whose encoder is ``parent``'s network (same layers, same weights): its rest
    takes the parent's CAM activation and the skip maps the parent's stem taps, computes the other encoder
    outputs from that activation with its own layers (Xception's block13_sepconv2_bn: two layers above the
    4-class cut), then decodes. None where an encoder output is neither tapped nor above the cut."""
    import keras

    parts = model.layers
    if parent.cam is None or len(parts) != 3 or parts[2].name != "unet_decoder":
        return None
    encoder, decoder = parts[1], parts[2]
    names = {layer.name for layer in encoder.layers}
    if parent.cam not in names:
        return None
    cam = keras.Input(shape=encoder.get_layer(parent.cam).output.shape[1:], name=parent.cam)
    inputs, picks, skips = [cam], [0], []
    first_tap = len(parent.stem.outputs) - len(parent.taps)
    for output in encoder.outputs:
        layer = output._keras_history.operation.name
        if layer in parent.taps:
            inputs.append(keras.Input(shape=output.shape[1:], name=layer))
            picks.append(first_tap + parent.taps.index(layer))
            skips.append(inputs[-1])
        else:  # raises ValueError where it needs more than the CAM activation
            skips.append(keras.Model(encoder.get_layer(parent.cam).output, output, name=f"{layer}_above_cut")(cam))
    rest = keras.Model(inputs, decoder(skips), name=f"{model.name}_rest")
    return Stages(parent.key, parent.stem, rest, None, tuple(picks))


def _rest_on_classifier(parent: Stages, feature_layer: str, part):
    """A transfer bundle: the parent's rest (its inputs, its graph) up to its pooled features, then this
    bundle's layers."""
    import keras

    features = [node.outputs[0] for nodes in parent.rest._nodes_by_depth.values() for node in nodes
                if not node.is_input and node.operation is not None and node.operation.name == feature_layer]
    if len(features) != 1:  # before the cut (in the shared stem) or called twice: another shape
        raise ValueError(f"'{feature_layer}' is not one layer of {parent.rest.name}")
    return keras.Model(parent.rest.inputs, part(features[0]), name=f"{part.name}_rest")


def _cut(model, cam_layer: str, name: str, taps: tuple[str, ...] = ()):
    """(stem, rest, tapped) of a functional ``model`` cut at the output of ``cam_layer``.

    The model's graph is re-traced once, with the sub-models that hold ``cam_layer`` opened up (their
    layers called one by one; any other sub-model, the frozen trunk, stays one call). A layer call that
    depends on the CAM activation goes to the rest, every other one to the stem. Every stem tensor a
    rest call takes crosses the cut: it is a stem output and a rest input, the CAM activation first
    (Grad-CAM explains the rest's first input), then the others (a residual branch that skips the cut)
    in the order the rest first needs them. Same layers, same weights: rest(stem(x)) is model(x). The
    outputs of the ``taps`` that lie below the cut follow as further stem outputs (sub-models that hold them
    opened up too); ``tapped`` names them in that order.
    """
    import keras

    image = keras.Input(shape=model.inputs[0].shape[1:], name="image")
    crossing: dict[int, tuple[object, object]] = {}  # id(stem tensor) -> (stem tensor, rest input)
    tapped: dict[str, object] = {}  # tap layer -> its stem output
    found = False

    def opens(op) -> bool:
        wanted = ([] if found else [cam_layer]) + [t for t in taps if t not in tapped]
        return hasattr(op, "_nodes_by_depth") and any(contains(op, t) for t in wanted)

    def cross(tensor):
        if id(tensor) not in crossing:
            label = cam_layer if not crossing else f"{tensor._keras_history.operation.name}_cut"
            crossing[id(tensor)] = (tensor, keras.Input(shape=tensor.shape[1:], name=label))
        return crossing[id(tensor)][1]

    def trace(graph, inputs: list) -> list:
        """``graph``'s outputs as (side, tensor), side "stem" or "rest", for inputs given the same way."""
        nonlocal found
        values = {id(x): v for x, v in zip(graph.inputs, inputs)}
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[depth]:
                op = node.operation
                if node.is_input or op is None:
                    continue
                given = [values[id(x)] for x in node.input_tensors]
                if opens(op):
                    if len(node.input_tensors) != len(keras.tree.flatten(node.arguments.args)):
                        raise ValueError(f"{op.name} is called with tensors as keyword arguments")
                    outputs = trace(op, given)
                else:
                    side = "rest" if any(s == "rest" for s, _ in given) else "stem"
                    args = {id(x): (cross(t) if side == "rest" and s == "stem" else t)
                            for x, (s, t) in zip(node.input_tensors, given)}
                    a, kw = node.arguments.fill_in(args)
                    outputs = [(side, t) for t in keras.tree.flatten(op(*a, **kw))]
                    if op.name in taps and side == "stem" and len(outputs) == 1:
                        tapped[op.name] = outputs[0][1]
                    if not found and op.name == cam_layer:
                        found = True
                        outputs = [("rest", cross(t)) for _, t in outputs]
                for x, v in zip(node.outputs, outputs):
                    values[id(x)] = v
        return [values[id(x)] for x in graph.outputs]

    outputs = trace(model, [("stem", image)])
    if not found or any(side != "rest" for side, _ in outputs):
        raise ValueError(f"{model.name}: no cut at '{cam_layer}' before its output")
    stem_outputs, rest_inputs = zip(*crossing.values())
    stem_outputs += tuple(tapped[t] for t in taps if t in tapped)
    rest_outputs = [t for _, t in outputs]
    return (keras.Model(image, list(stem_outputs) if len(stem_outputs) > 1 else stem_outputs[0], name=f"{name}_stem"),
            keras.Model(list(rest_inputs) if len(rest_inputs) > 1 else rest_inputs[0],
                        rest_outputs if len(rest_outputs) > 1 else rest_outputs[0], name=f"{name}_rest"),
            tuple(t for t in taps if t in tapped))


def contains(layer, name: str) -> bool:
    """``layer`` is the layer ``name`` or holds it, at any depth."""
    return layer.name == name or any(contains(inner, name) for inner in getattr(layer, "layers", None) or [])


def cam_model(model, layer_name: str):
    """A model mapping the input to (activation of ``layer_name``, model output), for a layer at any depth.

    Asking a nested model's inner tensor to be an output of the outer model fails ("graph disconnected"), so
    the chain of layers is re-traced on a fresh input with the sub-model that holds the layer replaced by a
    twin returning (activation, output)."""
    import keras

    if not contains(model, layer_name):
        raise ValueError(f"layer '{layer_name}' not found in model '{model.name}'")
    direct = [node.outputs[0] for nodes in model._nodes_by_depth.values() for node in nodes
              if not node.is_input and node.operation is not None and node.operation.name == layer_name]
    if len(direct) == 1:  # a layer of this graph (its own call here, where the layer is shared with another graph)
        return keras.Model(model.inputs, [direct[0], model.output])
    inputs = keras.Input(shape=model.inputs[0].shape[1:])
    x, activation = inputs, None
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if activation is None and contains(layer, layer_name):
            activation, x = cam_model(layer, layer_name)(x)
        else:
            x = layer(x)
    return keras.Model(inputs, [activation, x])
