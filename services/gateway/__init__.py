"""The OpenAI-compatible HTTP gateway: API keys, limits and budgets, response cache, streaming, safety."""
