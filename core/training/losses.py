"""Segmentation losses from the published comparison: BCE, Dice, Tversky (and BCE + Dice)."""

from __future__ import annotations

LOSS_NAMES = ("bce", "dice", "tversky", "bce+dice")


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

    losses = dict(zip(LOSS_NAMES, (bce_loss, dice, tversky, bce_dice)))
    if name not in losses:
        raise ValueError(f"unknown loss '{name}' (choose from {', '.join(LOSS_NAMES)})")
    return losses[name]
