"""Offline dataset preparation into the reference JSON format: ``python -m datasets.prepare.<voc|coco|wider|custom>``."""
