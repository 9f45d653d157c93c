"""Kubernetes resources generated from the project's catalogs (``llmops k8s ...``)."""
