"""Services of llmops-stream: the core layer (``services.core``), local infrastructure, inference replicas,
router, rollout judge, notifier, and, on top of everything, the CLI (``services.cli``) and the demo."""
