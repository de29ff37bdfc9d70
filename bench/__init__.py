"""Benchmarks: each writes JSON and a PNG under bench/results/; figures go in the README."""
