"""Classification metrics and the plots a training run leaves behind."""

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # render to files; training machines often have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from classifier.labels import EMOTIONS  # noqa: E402


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int = len(EMOTIONS)) -> np.ndarray:
    """Count faces per (true class, predicted class)."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def per_class_metrics(matrix: np.ndarray) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per emotion, from a confusion matrix."""
    metrics = {}
    for index, emotion in enumerate(EMOTIONS):
        true_positives = matrix[index, index]
        predicted = matrix[:, index].sum()
        actual = matrix[index, :].sum()
        precision = true_positives / predicted if predicted else 0.0
        recall = true_positives / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        metrics[emotion] = {
            "precision": round(float(precision), 4),
            "recall": round(float(recall), 4),
            "f1": round(float(f1), 4),
            "support": int(actual),
        }
    return metrics


def format_per_class(metrics: dict[str, dict[str, float]]) -> str:
    lines = [f"{'emotion':<10} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}"]
    for emotion, values in metrics.items():
        lines.append(
            f"{emotion:<10} {values['precision']:>9.3f} {values['recall']:>7.3f} "
            f"{values['f1']:>6.3f} {values['support']:>8d}"
        )
    return "\n".join(lines)


def format_confusion_matrix(matrix: np.ndarray) -> str:
    width = max(8, len(str(matrix.max())) + 1)
    lines = ["true \\ predicted " + "".join(f"{name[:7]:>{width}}" for name in EMOTIONS)]
    for name, row in zip(EMOTIONS, matrix):
        lines.append(f"{name:<17}" + "".join(f"{count:>{width}d}" for count in row))
    return "\n".join(lines)


def plot_confusion_matrix(matrix: np.ndarray, path: Path, title: str) -> None:
    """Save the confusion matrix normalised per true class (rows sum to 1)."""
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)

    figure, axes = plt.subplots(figsize=(7, 6))
    image = axes.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes)
    axes.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45, ha="right")
    axes.set_yticks(range(len(EMOTIONS)), EMOTIONS)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    for row in range(len(EMOTIONS)):
        for column in range(len(EMOTIONS)):
            value = normalised[row, column]
            axes.text(column, row, f"{value:.2f}", ha="center", va="center",
                      color="white" if value > 0.5 else "black", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_curves(history_csv: Path, path: Path) -> None:
    """Save accuracy and loss per epoch, training against PublicTest."""
    with history_csv.open(newline="") as file:
        rows = list(csv.DictReader(file))
    epochs = [int(row["epoch"]) + 1 for row in rows]

    figure, (accuracy_axes, loss_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for axes, metric in ((accuracy_axes, "accuracy"), (loss_axes, "loss")):
        axes.plot(epochs, [float(row[metric]) for row in rows], label="Training")
        axes.plot(epochs, [float(row[f"val_{metric}"]) for row in rows], label="PublicTest")
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def summarise(labels: np.ndarray, predictions: np.ndarray, split: str) -> dict:
    """Return the split, face count, accuracy, per-class metrics and confusion matrix as plain JSON types."""
    if len(labels) == 0:
        raise ValueError(f"cannot measure accuracy on {split}: it contains no faces")
    matrix = confusion_matrix(labels, predictions)
    return {
        "split": split,
        "n": int(len(labels)),
        "accuracy": round(float((predictions == labels).mean()), 4),
        "per_class": per_class_metrics(matrix),
        "confusion_matrix": matrix.tolist(),
    }


def write_report(
    run_dir: Path, history_csv: Path, labels: np.ndarray, probabilities: np.ndarray, split: str
) -> dict:
    """Write curves.png, confusion_matrix.png and per_class.json; return the figures."""
    figures = summarise(labels, probabilities.argmax(axis=1), split)
    matrix = np.array(figures["confusion_matrix"])

    plot_curves(history_csv, run_dir / "curves.png")
    plot_confusion_matrix(
        matrix, run_dir / "confusion_matrix.png", f"{split}, accuracy {figures['accuracy']:.3f}"
    )
    (run_dir / "per_class.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures
