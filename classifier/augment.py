"""Training augmentation: one random affine warp per face, resampled once.

The original recipe (Keras 2's ImageDataGenerator with rotation_range=10,
width and height shifts of 10%, zoom_range=0.1, horizontal flips) composes
rotation, shift and zoom into one affine transform and interpolates each face
once. Chaining Keras 3's RandomRotation, RandomTranslation and RandomZoom
layers instead interpolates three times. On FER-2013 faces that kept about 40%
of the fine detail (mean absolute Laplacian) of the faces used at test time,
and a model trained that way scored higher on blurred test faces than on the
faces themselves.
"""

import math

import keras
from keras import ops

ROTATION_DEGREES = 10.0
SHIFT_FRACTION = 0.1
ZOOM_FRACTION = 0.1


class RandomAffine(keras.layers.Layer):
    """Rotate, shift, zoom and mirror each face of a batch by random amounts, resampling once.

    Args:
        rotation_degrees: the largest rotation either way.
        shift_fraction: the largest shift, as a fraction of the width and height.
        zoom_fraction: horizontal and vertical scales are drawn independently
            from 1 - zoom_fraction to 1 + zoom_fraction.
        flip: mirror half of the faces left to right.
        seed: seed of the layer's random draws.
    """

    def __init__(
        self,
        rotation_degrees: float = ROTATION_DEGREES,
        shift_fraction: float = SHIFT_FRACTION,
        zoom_fraction: float = ZOOM_FRACTION,
        flip: bool = True,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if rotation_degrees < 0 or shift_fraction < 0 or not 0 <= zoom_fraction < 1:
            raise ValueError(
                f"invalid augmentation ranges rotation_degrees={rotation_degrees}, shift_fraction={shift_fraction}, "
                f"zoom_fraction={zoom_fraction}: expected rotation_degrees >= 0, shift_fraction >= 0 "
                "and 0 <= zoom_fraction < 1"
            )
        self.rotation_degrees = rotation_degrees
        self.shift_fraction = shift_fraction
        self.zoom_fraction = zoom_fraction
        self.flip = flip
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        """Warp `images` of shape (N, H, W, C). At inference time, return them unchanged."""
        if not training:
            return images

        images = ops.convert_to_tensor(images)
        if self.flip:
            mirrored = self.uniform(ops.shape(images)[:1], 0.0, 1.0) < 0.5
            images = ops.where(mirrored[:, None, None, None], ops.flip(images, axis=2), images)
        transforms = self.random_transforms(ops.shape(images))
        return ops.image.affine_transform(images, transforms, interpolation="bilinear", fill_mode="nearest")

    def random_transforms(self, shape):
        """Draw one transform per face, mapping output pixels to the input pixels they sample.

        Each row is [a0, a1, a2, b0, b1, b2, 0, 0]: output pixel (x, y) samples
        the input at (a0 x + a1 y + a2, b0 x + b1 y + b2). The face is rotated
        and scaled about its centre, then shifted.
        """
        batch, height, width = shape[0], shape[1], shape[2]
        height = ops.cast(height, "float32")
        width = ops.cast(width, "float32")

        max_angle = math.radians(self.rotation_degrees)
        angle = self.uniform((batch,), -max_angle, max_angle)
        scale_x = self.uniform((batch,), 1 - self.zoom_fraction, 1 + self.zoom_fraction)
        scale_y = self.uniform((batch,), 1 - self.zoom_fraction, 1 + self.zoom_fraction)
        shift_x = self.uniform((batch,), -self.shift_fraction, self.shift_fraction) * width
        shift_y = self.uniform((batch,), -self.shift_fraction, self.shift_fraction) * height

        # The input point sampled is centre + A (output - centre - shift), where
        # A rotates by the angle and scales each axis.
        cos, sin = ops.cos(angle), ops.sin(angle)
        a0, a1 = scale_x * cos, -scale_x * sin
        b0, b1 = scale_y * sin, scale_y * cos
        centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
        from_x, from_y = centre_x + shift_x, centre_y + shift_y
        a2 = centre_x - a0 * from_x - a1 * from_y
        b2 = centre_y - b0 * from_x - b1 * from_y

        zeros = ops.zeros_like(angle)
        return ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)

    def uniform(self, shape, low: float, high: float):
        """Draw values uniformly from `low` to `high` with the layer's seed generator."""
        return keras.random.uniform(shape, minval=low, maxval=high, seed=self.seed_generator)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            rotation_degrees=self.rotation_degrees,
            shift_fraction=self.shift_fraction,
            zoom_fraction=self.zoom_fraction,
            flip=self.flip,
            seed=self.seed,
        )
        return config


def make_augmentation(seed: int) -> RandomAffine:
    """Return the original recipe's augmentation: rotations up to 10 degrees, 10% shifts and zoom, mirroring."""
    return RandomAffine(seed=seed, name="augmentation")
