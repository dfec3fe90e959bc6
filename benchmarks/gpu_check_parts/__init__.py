"""The parts of benchmarks/gpu_check.py: its report, its sizes and data, the in-process training
parts, and the parts that run mmrobust as its own process."""
