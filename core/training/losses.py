"""Segmentation losses from the published comparison: BCE, Dice, Tversky (and BCE + Dice, with Dice over all images
or over the images with a lesion only)."""

from __future__ import annotations

LOSS_NAMES = ("bce", "dice", "tversky", "bce+dice", "bce+lesion_dice")


def segmentation_loss(name: str, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1.0):
    """A Keras loss on sigmoid probabilities; Tversky's beta > alpha punishes missed lesion pixels more."""
    import keras
    from keras import ops

    def _sums(y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        axes = (1, 2, 3)
        tp = ops.sum(y_true * y_pred, axis=axes)
        fp = ops.sum((1 - y_true) * y_pred, axis=axes)
        fn = ops.sum(y_true * (1 - y_pred), axis=axes)
        return tp, fp, fn

    def dice(y_true, y_pred):
        tp, fp, fn = _sums(y_true, y_pred)
        return 1 - (2 * tp + smooth) / (2 * tp + fp + fn + smooth)

    def tversky(y_true, y_pred):
        tp, fp, fn = _sums(y_true, y_pred)
        return 1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)

    bce = keras.losses.BinaryCrossentropy()

    def bce_loss(y_true, y_pred):
        return bce(ops.cast(y_true, "float32"), y_pred)

    def bce_dice(y_true, y_pred):
        return bce_loss(y_true, y_pred) + ops.mean(dice(y_true, y_pred))

    def bce_lesion_dice(y_true, y_pred):
        """BCE + Dice averaged over the images that have a lesion: on an empty mask Dice is 1 for any drawn pixel, so
        with many lesion-free images it teaches the decoder to draw less on every image; BCE still teaches those."""
        lesion = ops.cast(ops.sum(ops.cast(y_true, "float32"), axis=(1, 2, 3)) > 0, "float32")
        return bce_loss(y_true, y_pred) + ops.sum(dice(y_true, y_pred) * lesion) / ops.maximum(ops.sum(lesion), 1.0)

    losses = dict(zip(LOSS_NAMES, (bce_loss, dice, tversky, bce_dice, bce_lesion_dice)))
    if name not in losses:
        raise ValueError(f"unknown loss '{name}' (choose from {', '.join(LOSS_NAMES)})")
    return losses[name]
