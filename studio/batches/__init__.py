"""Batches: reading uploads and ZIPs, one request per image, reading a batch back and its ZIP."""
