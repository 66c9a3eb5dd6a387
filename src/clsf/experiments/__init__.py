"""compare and sweep: many ordinary runs, each in its own process, gathered in one folder."""
