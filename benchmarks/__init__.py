"""Benchmarks: they print numbers and write JSON; they assert nothing about speed."""
