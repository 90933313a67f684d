"""EmberLink cloud."""
