"""EmberLink edge."""
