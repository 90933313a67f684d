"""EmberLink board application (MicroPython): the gateway's job on a small board."""
