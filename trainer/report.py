"""`python -m trainer evaluate RUN --shards DIR [--split val]` (or `--input` labeled audio).

Writes RUN/report/: metrics.json, per_class.csv (precision/recall/F1/support),
confusion_matrix.csv and .png, training_curves.png (from metrics.csv), predictions.csv and,
when the data has groups (e.g. speakers), per_group.csv; and shows the figures as a table.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix  # noqa: E402

from shared.atomic import text_bytes, write_bytes, write_json  # noqa: E402
from shared.console import plot_label, shown  # noqa: E402
from shared.errors import DataError, UsageError  # noqa: E402
from shared.labels import label_index  # noqa: E402
from shared.rejections import rejections_csv  # noqa: E402
from trainer.evaluation import balanced_accuracy, macro_f1, majority_baseline  # noqa: E402
from trainer.inference import Predicted  # noqa: E402
from trainer.predict import check_known_labels, lost_phrase  # noqa: E402


def _save_png(figure, path: Path) -> None:
    figure.savefig(path.with_name(path.name + ".tmp.png"), dpi=120, bbox_inches="tight")
    plt.close(figure)
    path.with_name(path.name + ".tmp.png").replace(path)


def plot_confusion(matrix: np.ndarray, labels: list[str], path: Path) -> None:
    size = max(5.0, 0.55 * len(labels) + 2)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    image = axes.imshow(matrix, cmap="Blues")
    names = [plot_label(name) for name in labels]
    axes.set_xticks(range(len(labels)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), value in np.ndenumerate(matrix):
        axes.text(col, row, str(value), ha="center", va="center", fontsize=8,
                  color="white" if value > threshold else "black")
    figure.colorbar(image, ax=axes, fraction=0.046)
    axes.set_title("confusion matrix")
    _save_png(figure, path)


def plot_curves(metrics_csv: Path, path: Path) -> bool:
    """Loss, accuracy and LR per epoch from metrics.csv; False (no figure) when it has no epoch to
    draw: missing, empty (a run stopped before its first epoch ended) or not a metrics table."""
    try:
        history = pd.read_csv(metrics_csv)
    except (FileNotFoundError, pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        return False
    if history.empty or not {"epoch", "train_loss", "val_loss", "train_acc", "val_acc", "lr"} <= set(history):
        return False
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].plot(history["epoch"], history["train_loss"], label="train")
    axes[0].plot(history["epoch"], history["val_loss"], label="val")
    axes[0].set_title("loss")
    axes[1].plot(history["epoch"], history["train_acc"], label="train")
    axes[1].plot(history["epoch"], history["val_acc"], label="val")
    axes[1].set_title("accuracy")
    axes[2].plot(history["epoch"], history["lr"])
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    figure.tight_layout()
    _save_png(figure, path)
    return True


def evaluate(run: Path, labels: list[str], predicted: Predicted, source: str, console: Console | None = None,
             windows: Predicted | None = None, adapted: int = 0) -> dict:
    """Score labeled predictions (one per file) and write RUN/report/; with the per-window rows of
    segmented recordings, their own accuracy goes beside the per-file figures. `adapted`: the
    clips the model's BatchNorm statistics were re-estimated on (--adapt-bn), 0 for none."""
    known = [i for i, t in enumerate(predicted.truth) if t is not None]
    if not predicted.paths and predicted.rejected:
        raise DataError(f"nothing in {source} could be evaluated: "
                        f"{lost_phrase(predicted, 'failed')}; "
                        f"first: {predicted.rejected[0].path}: {predicted.rejected[0].reason}")
    if not predicted.paths:
        raise UsageError(f"{source} has no sample to evaluate; choose another split with --split, or another input")
    if not known:
        raise UsageError(f"{source} has no labels to evaluate against; use a labeled split or CSV")
    check_known_labels({predicted.truth[i] for i in known}, labels, source)
    index = label_index(labels)
    y_true = np.array([index[predicted.truth[i]] for i in known])
    y_pred = predicted.probs[known].argmax(axis=1)
    report = run / "report"
    report.mkdir(parents=True, exist_ok=True)
    classes = list(range(len(labels)))
    per_class = classification_report(y_true, y_pred, labels=classes, target_names=labels,
                                      output_dict=True, zero_division=0)
    metrics = {"source": source, "samples": len(known),
               "accuracy": float(accuracy_score(y_true, y_pred)),
               "macro_f1": macro_f1(y_true, y_pred, len(labels)),
               "balanced_accuracy": balanced_accuracy(y_true, y_pred), "adapted_bn_clips": adapted}
    if windows is not None:
        scored = [i for i, t in enumerate(windows.truth) if t in index]
        hits = [windows.probs[i].argmax() == index[windows.truth[i]] for i in scored]
        metrics["windows"] = {"samples": len(scored), "accuracy": float(np.mean(hits)) if hits else float("nan")}
    baseline = majority_baseline(y_true, len(labels))
    metrics["majority_baseline"] = {"class": labels[baseline.pop("class_index")], **baseline}
    columns = ("precision", "recall", "f1-score", "support")
    table = pd.DataFrame([{"class": name, **{k: per_class[name][k] for k in columns}}
                          for name in labels]).rename(columns={"f1-score": "f1"})
    matrix = confusion_matrix(y_true, y_pred, labels=classes)
    write_bytes(report / "per_class.csv", text_bytes(table.to_csv(index=False)))
    write_bytes(report / "confusion_matrix.csv",
                text_bytes(pd.DataFrame(matrix, index=labels, columns=labels).rename_axis("true").to_csv()))
    plot_confusion(matrix, labels, report / "confusion_matrix.png")
    plot_curves(run / "metrics.csv", report / "training_curves.png")
    rows = pd.DataFrame({"path": [predicted.paths[i] for i in known], "label": [predicted.truth[i] for i in known],
                         "predicted": [labels[j] for j in y_pred]}).sort_values("path")
    write_bytes(report / "predictions.csv", text_bytes(rows.to_csv(index=False)))
    groups = [predicted.groups[i] for i in known]
    if any(g is not None for g in groups):
        by_group = pd.DataFrame({"group": groups, "correct": y_true == y_pred}).groupby("group")["correct"]
        per_group = pd.DataFrame({"samples": by_group.size(), "accuracy": by_group.mean()}).reset_index()
        write_bytes(report / "per_group.csv", text_bytes(per_group.to_csv(index=False)))
        metrics["worst_group"] = {"group": str(per_group.loc[per_group["accuracy"].idxmin(), "group"]),
                                  "accuracy": float(per_group["accuracy"].min())}
    # Inputs that could not be scored (undecodable audio, damaged shards) are counted, never dropped:
    # `not_evaluated` rows of not_evaluated.csv (a file, or a whole damaged shard), and the clips they hold.
    metrics["not_evaluated"] = len(predicted.rejected)
    metrics["not_evaluated_clips"] = predicted.lost  # a damaged shard counts its samples
    skipped = report / "not_evaluated.csv"
    if predicted.rejected:
        write_bytes(skipped, rejections_csv(predicted.rejected))
    else:
        skipped.unlink(missing_ok=True)
    write_json(report / "metrics.json", metrics)
    _show(metrics, table, console or Console())
    if predicted.rejected:
        (console or Console(stderr=True)).print(
            shown(f"warning: {lost_phrase(predicted, 'could not be evaluated')}; see {skipped}"),
            soft_wrap=True)  # one line however long the path: never wrapped at the console's width
    return metrics


def _show(metrics: dict, table: pd.DataFrame, console: Console) -> None:
    base = metrics["majority_baseline"]
    # The source (a path) and the class names are the user's: shown exactly, never read as markup.
    title = (f"{metrics['source']}: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
             f"balanced accuracy {metrics['balanced_accuracy']:.4f}")
    caption = (f"always answering '{base['class']}' would score accuracy {base['accuracy']:.4f}, "
               f"macro-F1 {base['macro_f1']:.4f}, balanced accuracy {base['balanced_accuracy']:.4f}")
    view = Table(title=shown(title), caption=shown(caption))
    for column in ("class", "precision", "recall", "f1", "support"):
        view.add_column(column, justify="left" if column == "class" else "right")
    for row in table.itertuples(index=False):
        view.add_row(shown(row[0]), f"{row[1]:.3f}", f"{row[2]:.3f}", f"{row[3]:.3f}", str(int(row[4])))
    console.print(view)
