"""The database: engine, sessions and migrations (`engine`), and the tables (`tables`)."""
