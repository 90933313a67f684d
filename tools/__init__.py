"""EmberLink tools."""
