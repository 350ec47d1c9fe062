"""Training: the plain PyTorch distillation loop (no Ray, no MLflow); Ray code wraps it."""
