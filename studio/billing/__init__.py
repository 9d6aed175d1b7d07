"""Money-like data: the credits ledger, prices, plans and team budgets."""
