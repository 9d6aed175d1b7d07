"""Strength sweeps: planning the cells, reading a sweep back, structure scores, grid and ZIP export."""
