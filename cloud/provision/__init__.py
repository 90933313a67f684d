"""Provisioning on the cloud side: claim tokens, gateway credentials, the broker's files.

``claims.py`` issues and redeems one-time claim tokens and manages credentials (rotate, revoke,
decommission), writing an audit row for every step; ``broker.py`` renders Mosquitto's
``password_file`` and ``acl_file`` from the active credentials and signals the broker to reload.
"""
