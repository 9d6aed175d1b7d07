"""Usage analytics for the admin pages, aggregated in SQL."""
