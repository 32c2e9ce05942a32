"""`aloekit serve`: a model behind the OpenAI chat-completions API, with the medical policy prompt, an opt-in guard,
batching of concurrent requests and a chat page (docs/serve.md). FastAPI and uvicorn come with the `serve` extra."""
