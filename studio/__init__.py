"""Img2Img Studio's domain code, a package per concern: `db` (engine, tables), `accounts` (users, admin
services, first run), `billing` (credits ledger, prices, plans, budgets), `catalogue` (styles, requests,
presets, recipes), `jobs` (submitting, leases, the worker, history, retention), `media` (uploads, storage,
comparing), `sweeps`, `batches`, `analytics`, `cli` (`python -m studio …`) and `devtools`.

Nothing here imports torch, diffusers or transformers (the model code is `pipelines`, imported when a job
runs), and only `studio.web` imports streamlit: the pages' helpers.
"""
