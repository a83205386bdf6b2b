"""The agent's Kubernetes edge: GPUNode status out, GPUNode spec (the desired layout) in, and
the agent's Events."""
