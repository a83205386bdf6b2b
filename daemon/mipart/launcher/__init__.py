"""``mipart-vllm``: sizes a vLLM instance to its partition allocation and starts it in turn."""
