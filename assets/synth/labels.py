"""CheXpert-style study labels (1.0 positive, 0.0 negative, -1.0 uncertain, None blank) as the
MIMIC-CXR-JPG labeler would have read them off this study's report."""

from __future__ import annotations

import numpy as np

from assets.synth.timeline import StudyPlan

CHEXPERT = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
            "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other",
            "Pneumonia", "Pneumothorax", "Support Devices")

TO_CHEXPERT = {
    "pleural effusion": ("Pleural Effusion",),
    "cardiomegaly": ("Cardiomegaly",),
    "pneumothorax": ("Pneumothorax",),
    "lung opacity": ("Lung Lesion", "Lung Opacity"),
    "consolidation": ("Consolidation", "Lung Opacity"),
    "atelectasis": ("Atelectasis", "Lung Opacity"),
    "edema": ("Edema",),
}


def chexpert_labels(study: StudyPlan, previous: StudyPlan | None, rng: np.random.Generator) -> dict[str, float | None]:
    labels: dict[str, float | None] = {c: None for c in CHEXPERT}
    # A finding that has just resolved is reported as absent ("no effusion"): a 0.0, not a blank.
    if previous is not None:
        for f in previous.findings:
            if study.finding(f.name) is None:
                for c in TO_CHEXPERT[f.name]:
                    labels[c] = 0.0
    for f in study.findings:
        # Mild findings are often hedged in reports ("possible small effusion"): uncertain.
        value = -1.0 if f.level_index == 0 and rng.random() < 0.2 else 1.0
        for c in TO_CHEXPERT[f.name]:
            if labels[c] != 1.0:  # a positive from another finding wins
                labels[c] = value
    # Report habits the labeler picks up: "pneumonia cannot be excluded" next to a consolidation,
    # and an enlarged cardiac silhouette read as an enlarged cardiomediastinum.
    if study.finding("consolidation") is not None:
        labels["Pneumonia"] = -1.0
    heart = study.finding("cardiomegaly")
    if heart is not None and heart.level_index > 0:
        labels["Enlarged Cardiomediastinum"] = 1.0
    if not study.findings:
        labels["No Finding"] = 1.0
    return labels
