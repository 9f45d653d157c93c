"""The prompt registry: versioned prompt templates on ``llm.prompts``, rendered in a sandbox before dispatch."""
