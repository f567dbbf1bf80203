"""The embedded dataset generator (`spotdiff synth`): chest radiographs rendered from a real CT,
written in MIMIC-CXR-JPG v2.0.0 + Medical-Diff-VQA format with exact ground truth.
Entry point: assets.synth.generate.generate. See docs/embedded-dataset.md."""
