"""Dataset preparation (VOC, COCO, WIDER, custom), demo data, the dataset and its transforms."""
