"""EmberLink protocol."""
