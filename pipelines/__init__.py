"""Model code: the only package that imports torch, diffusers and transformers.

Importing this package, `pipelines.errors`, `pipelines.params` or `pipelines.registry` stays cheap
(no torch); the heavy modules (`pipelines.tiny`, `pipelines.cache`, `pipelines.img2img`) import the
diffusion stack at the top and are imported lazily by callers.
"""
