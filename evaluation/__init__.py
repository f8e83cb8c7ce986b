"""Evaluation: the metrics (mAP, CP/CR/CF1, OP/OR/OF1, per-class AP) and the offline evaluator command."""
