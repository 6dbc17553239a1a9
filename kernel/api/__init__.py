"""The HTTP API: Ollama- and OpenAI-compatible routes over the engine."""
