"""Emotion classes of FER-2013, in the class index order of the original CSV."""

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

NUM_CLASSES = len(EMOTIONS)

# The three standard splits, named as in the CSV's `Usage` column and the
# image-folder release's file-name prefixes.
SPLITS: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
