"""Tools for development, tests and benchmarks: demo data (`seed`), a throwaway PostgreSQL."""
