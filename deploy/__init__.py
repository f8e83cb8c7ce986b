"""Deployment: the inference.yml contract, static export (+ ONNX), the Paddle Inference predictor, the benchmark log."""
