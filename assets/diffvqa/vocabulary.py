"""Medical-Diff-VQA vocabulary, string for string.

The released dataset's own strings (as its authors' question generator writes them); the format
is described in docs/data.md. There is no "large" level and no "nodule" finding in it.
"""

# The 30 finding names of the released dataset, in the order the format file lists them.
FINDINGS: tuple[str, ...] = (
    "pleural effusion", "atelectasis", "cardiomegaly", "enlargement of the cardiac silhouette",
    "edema", "hernia", "vascular congestion", "hilar congestion", "pneumothorax", "heart failure",
    "lung opacity", "pneumonia", "tortuosity of the descending aorta", "scoliosis",
    "gastric distention", "hypoxemia", "hypertensive heart disease", "hematoma",
    "tortuosity of the thoracic aorta", "contusion", "emphysema", "granuloma", "calcification",
    "pleural thickening", "thymoma", "blunting of the costophrenic angle", "consolidation",
    "fracture", "pneumomediastinum", "air collection",
)
# The released CSV also carries "infection" (treated as the same finding as pneumonia there).
EXTRA_FINDINGS: tuple[str, ...] = ("infection",)

# Level words; several are multi-word and contain " to ", which the parser must respect.
LEVELS: tuple[str, ...] = (
    "moderately", "moderate", "acute", "mildly", "mild", "small", "severe", "moderate to large",
    "moderate to severe", "mild to moderate", "minimal", "subtle", "massive", "minimally",
    "increasing", "decreasing", "minor",
)

TYPES: tuple[str, ...] = (
    "interstitial", "layering", "dense", "parenchymal", "compressive", "obstructive", "linear",
    "plate-like", "patchy", "ground-glass", "calcified", "scattered", "focal", "multifocal",
    "multi-focal",
)

LOCATION_WORDS: tuple[str, ...] = (
    "mid to lower", "left", "right", "retrocardiac", "pericardial", "bibasilar", "bilateral",
    "basilar", "apicolateral", "basal", "lung", "area", "base", "apical", "pleural", "upper",
    "lower", "middle", "mid", "rib",
)

# View positions a view answer names ("{view} view"); the main images are frontal (AP or PA).
VIEWS: tuple[str, ...] = ("PA", "AP", "LL", "LATERAL", "AP AXIAL", "PA LLD", "AP LLD", "AP RLD")

QUESTION_TYPES: tuple[str, ...] = (
    "abnormality", "presence", "view", "location", "type", "level", "difference",
)

DIFFERENCE_QUESTION = "what has changed compared to the reference image?"
AREA_QUESTION = "what has changed in the {words} area?"
NOTHING_CHANGED = "nothing has changed."
