"""mini-Xception: a small residual CNN with depthwise-separable convolutions.

The architecture follows Arriaga, Ploeger and Valdenegro, "Real-time
Convolutional Neural Networks for Emotion and Gender Classification" (2017):
two plain 3x3 convolutions, four residual blocks of separable convolutions,
a 3x3 convolution to one channel per class, global average pooling and softmax.
At 48x48 input and seven classes it has about 58,000 parameters.
"""

import keras
from keras import layers, regularizers

from classifier.labels import NUM_CLASSES
from classifier.preprocess import DEFAULT_INPUT_SIZE

BLOCK_FILTERS = (16, 32, 64, 128)
STEM_FILTERS = 8


def build_mini_xception(
    input_size: int = DEFAULT_INPUT_SIZE,
    num_classes: int = NUM_CLASSES,
    l2: float = 0.01,
    separable_l2: float = 0.0,
    block_filters: tuple[int, ...] = BLOCK_FILTERS,
) -> keras.Model:
    """Build mini-Xception for gray `input_size` x `input_size` faces.

    `l2` is the weight decay of the plain convolutions, as in the original
    recipe. `separable_l2` is the weight decay of the depthwise and pointwise
    kernels of the separable convolutions. The original Keras 2 code passed
    `kernel_regularizer` to SeparableConv2D, which Keras 2 silently ignored,
    so 0.0 reproduces the original; Keras 3 rejects that argument outright.

    `block_filters` sets the channels of each residual block, and so the
    width of the network; each block halves the spatial size.
    """
    if not block_filters or any(filters < 1 for filters in block_filters):
        raise ValueError(f"expected one or more positive block widths, got {block_filters}")

    conv_decay = regularizers.L2(l2) if l2 > 0 else None
    separable_decay = regularizers.L2(separable_l2) if separable_l2 > 0 else None

    inputs = keras.Input(shape=(input_size, input_size, 1), name="face")

    x = layers.Conv2D(STEM_FILTERS, 3, use_bias=False, kernel_regularizer=conv_decay, name="stem_conv1")(inputs)
    x = layers.BatchNormalization(name="stem_bn1")(x)
    x = layers.ReLU(name="stem_relu1")(x)
    x = layers.Conv2D(STEM_FILTERS, 3, use_bias=False, kernel_regularizer=conv_decay, name="stem_conv2")(x)
    x = layers.BatchNormalization(name="stem_bn2")(x)
    x = layers.ReLU(name="stem_relu2")(x)

    for index, filters in enumerate(block_filters, start=1):
        x = residual_block(x, filters, f"block{index}", conv_decay, separable_decay)

    x = layers.Conv2D(num_classes, 3, padding="same", kernel_regularizer=conv_decay, name="class_conv")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Softmax(name="probabilities")(x)

    return keras.Model(inputs, outputs, name="mini_xception")


def residual_block(x, filters: int, name: str, conv_decay, separable_decay):
    """Halve the spatial size through two separable convolutions plus a strided 1x1 shortcut."""
    shortcut = layers.Conv2D(
        filters, 1, strides=2, padding="same", use_bias=False,
        kernel_regularizer=conv_decay, name=f"{name}_shortcut",
    )(x)
    shortcut = layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)

    for step in (1, 2):
        x = layers.SeparableConv2D(
            filters, 3, padding="same", use_bias=False,
            depthwise_regularizer=separable_decay, pointwise_regularizer=separable_decay,
            name=f"{name}_sepconv{step}",
        )(x)
        x = layers.BatchNormalization(name=f"{name}_bn{step}")(x)
        if step == 1:
            x = layers.ReLU(name=f"{name}_relu")(x)

    x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_pool")(x)
    return layers.Add(name=f"{name}_add")([x, shortcut])
