"""membot's platform-neutral core: settings, the LLM, embeddings, tools and the agent loop."""
