"""The router: sends each request of a model alias to one deployment, by the alias's current rollout weights."""
