"""EmberLink: edge-to-cloud system for fire-safety micro-stations.

The rooms of the repository install as sub-packages: ``emberlink.protocol``,
``emberlink.firmware``, ``emberlink.edge``, ``emberlink.cloud`` and ``emberlink.tools``.
"""

__version__ = "0.1.0"
