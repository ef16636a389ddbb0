"""Draw face boxes, emotions and probability bars onto released frames.

Sizes scale with the frame height, with 720 px as the reference, so labels stay
readable from 360p to 1080p: label text is 12 px tall at 360p (its
`cv2.getTextSize` height) and grows in proportion to the frame height.
"""

import math

import cv2
import numpy as np

from capture.convert import to_bgr8
from sink.joiner import JoinedFrame

# BGR colours of the FER-2013 emotions. Labels outside this table take PALETTE colours by class index.
EMOTION_COLORS = {
    "angry": (40, 40, 230),
    "disgust": (40, 160, 60),
    "fear": (180, 60, 160),
    "happy": (0, 210, 255),
    "sad": (200, 110, 30),
    "surprise": (0, 140, 255),
    "neutral": (200, 200, 200),
}
PALETTE = ((255, 180, 0), (80, 200, 120), (60, 60, 255), (220, 220, 0), (200, 0, 200), (0, 200, 255))
UNCLASSIFIED_COLOR = (255, 255, 255)
REJECTED_COLOR = (150, 150, 150)
PANEL_COLOR = (20, 20, 20)
TEXT_COLOR = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX
REFERENCE_HEIGHT = 720


class Annotator:
    """Draw the faces of a JoinedFrame onto a copy of its pixels.

    Each classified face gets a box in the colour of its top emotion, a label such
    as `happy 87%` and a bar chart of all class probabilities beside the box. A face
    whose classification timed out gets a white box labelled `unclassified`, and a
    rejected face a thin grey dashed box with the rejection reason.
    """

    def draw(self, joined: JoinedFrame) -> np.ndarray:
        frame = joined.frame
        canvas = to_bgr8(frame.pixels)
        # Decoded pixels are read-only views of the received message, so never draw on them.
        if not canvas.flags.writeable or np.shares_memory(canvas, frame.pixels):
            canvas = canvas.copy()

        style = _Style.for_height(canvas.shape[0])
        for box, reason in zip(frame.rejected_boxes, frame.rejected_reasons):
            self._draw_rejected(canvas, style, box, reason)
        for face, box in enumerate(frame.boxes):
            if joined.classified(face):
                self._draw_classified(canvas, style, box, joined.probabilities[face], joined.labels)
            else:
                x, y, w, h = (int(v) for v in box)
                cv2.rectangle(canvas, (x, y), (x + w, y + h), UNCLASSIFIED_COLOR, style.box_thickness, cv2.LINE_AA)
                _draw_label(canvas, style, "unclassified", (x, y), UNCLASSIFIED_COLOR)
        return canvas

    def _draw_classified(self, canvas: np.ndarray, style: "_Style", box: np.ndarray, probabilities: np.ndarray,
                         labels: list[str]) -> None:
        x, y, w, h = (int(v) for v in box)
        top = int(np.argmax(probabilities))
        color = emotion_color(labels[top], top)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), color, style.box_thickness, cv2.LINE_AA)
        _draw_label(canvas, style, f"{labels[top]} {probabilities[top]:.0%}", (x, y), color)
        _draw_bars(canvas, style, (x, y, w, h), probabilities, labels)

    def _draw_rejected(self, canvas: np.ndarray, style: "_Style", box: np.ndarray, reason: str) -> None:
        x, y, w, h = (int(v) for v in box)
        _draw_dashed_rectangle(canvas, (x, y), (x + w, y + h), REJECTED_COLOR, max(1, style.box_thickness // 2),
                               dash=style.dash)
        _draw_label(canvas, style, reason.replace("_", " "), (x, y), REJECTED_COLOR, scale=0.8)


class _Style:
    """Pixel sizes for one frame height."""

    def __init__(self, scale: float):
        self.scale = scale
        self.font_scale = 0.9 * scale
        self.text_thickness = 1 if scale < 1.2 else 2
        self.box_thickness = max(1, round(2 * scale))
        self.padding = max(2, round(4 * scale))
        self.bar_row = max(11, round(24 * scale))  # height of one class row in the chart
        self.bar_width = max(40, round(90 * scale))  # length of a bar at probability 1
        self.dash = max(4, round(10 * scale))

    @classmethod
    def for_height(cls, height: int) -> "_Style":
        # Frames under 360 px keep the 360p sizes, because smaller text is unreadable.
        return cls(max(0.5, height / REFERENCE_HEIGHT))


def emotion_color(label: str, index: int) -> tuple[int, int, int]:
    return EMOTION_COLORS.get(label, PALETTE[index % len(PALETTE)])


def _text_size(style: _Style, text: str, scale: float = 1.0) -> tuple[int, int, int]:
    (width, height), baseline = cv2.getTextSize(text, FONT, style.font_scale * scale, style.text_thickness)
    return width, height, baseline


def _draw_label(canvas: np.ndarray, style: _Style, text: str, corner: tuple[int, int], color: tuple[int, int, int],
                scale: float = 1.0) -> None:
    """Write `text` on a filled tag above the box corner, or inside the box when there is no room above."""
    width, height, baseline = _text_size(style, text, scale)
    x, y = corner
    tag_height = height + baseline + 2 * style.padding
    top = y - tag_height if y - tag_height >= 0 else y
    x = min(max(x, 0), max(canvas.shape[1] - width - 2 * style.padding, 0))
    cv2.rectangle(canvas, (x, top), (x + width + 2 * style.padding, top + tag_height), color, cv2.FILLED)
    text_color = (0, 0, 0) if sum(color) > 380 else TEXT_COLOR
    cv2.putText(canvas, text, (x + style.padding, top + style.padding + height), FONT, style.font_scale * scale,
                text_color, style.text_thickness, cv2.LINE_AA)


def _draw_bars(canvas: np.ndarray, style: _Style, box: tuple[int, int, int, int], probabilities: np.ndarray,
               labels: list[str]) -> None:
    """Draw one bar per class on a dark panel right of the box, or left of it when the right side is too narrow."""
    x, y, w, h = box
    name_width = max(_text_size(style, label, 0.8)[0] for label in labels)
    panel_width = name_width + style.bar_width + 3 * style.padding
    panel_height = len(labels) * style.bar_row + 2 * style.padding
    frame_height, frame_width = canvas.shape[:2]

    left = x + w + style.padding
    if left + panel_width > frame_width:
        left = max(x - style.padding - panel_width, 0)
    top = min(max(y, 0), max(frame_height - panel_height, 0))
    right, bottom = min(left + panel_width, frame_width), min(top + panel_height, frame_height)
    if right <= left or bottom <= top:
        return

    # A translucent panel keeps the scene visible behind the chart.
    region = canvas[top:bottom, left:right]
    cv2.addWeighted(region, 0.35, np.full_like(region, PANEL_COLOR), 0.65, 0, dst=region)

    for row, (label, probability) in enumerate(zip(labels, probabilities)):
        row_top = top + style.padding + row * style.bar_row
        baseline_y = row_top + style.bar_row - max(2, style.bar_row // 5)
        cv2.putText(canvas, label, (left + style.padding, baseline_y), FONT, style.font_scale * 0.8, TEXT_COLOR,
                    1, cv2.LINE_AA)
        bar_left = left + 2 * style.padding + name_width
        bar_length = int(round(float(probability) * style.bar_width)) if math.isfinite(probability) else 0
        bar_top = row_top + max(1, style.bar_row // 6)
        bar_bottom = row_top + style.bar_row - max(1, style.bar_row // 6)
        cv2.rectangle(canvas, (bar_left, bar_top), (bar_left + style.bar_width, bar_bottom), (70, 70, 70), 1)
        if bar_length > 0:
            cv2.rectangle(canvas, (bar_left, bar_top), (bar_left + bar_length, bar_bottom),
                          emotion_color(label, row), cv2.FILLED)


def _draw_dashed_rectangle(canvas: np.ndarray, top_left: tuple[int, int], bottom_right: tuple[int, int],
                           color: tuple[int, int, int], thickness: int, dash: int) -> None:
    (x0, y0), (x1, y1) = top_left, bottom_right
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    for (ax, ay), (bx, by) in zip(corners, corners[1:]):
        length = max(abs(bx - ax), abs(by - ay))
        for start in range(0, length, 2 * dash):
            end = min(start + dash, length)
            p0 = (ax + (bx - ax) * start // length, ay + (by - ay) * start // length)
            p1 = (ax + (bx - ax) * end // length, ay + (by - ay) * end // length)
            cv2.line(canvas, p0, p1, color, thickness, cv2.LINE_AA)
