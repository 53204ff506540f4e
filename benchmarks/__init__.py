"""Benchmarks and tools: composition roots that may import any service."""
