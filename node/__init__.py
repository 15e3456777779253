"""One yrd-gateway node: config, composition root, servers, delivery, storage, CLI."""
