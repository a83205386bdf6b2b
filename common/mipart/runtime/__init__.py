"""Process plumbing every mipart binary shares (logging set-up)."""
