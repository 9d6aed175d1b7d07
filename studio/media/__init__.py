"""Images: upload validation, the content-addressed store, comparing two images."""
