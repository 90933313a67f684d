"""EmberLink firmware."""
