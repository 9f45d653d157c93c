"""The human review queue's command logic (`llmops review`): list pending items, record labels as feedback."""
