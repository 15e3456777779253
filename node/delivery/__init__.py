"""Getting items to peers and taking them in: the outbox, per-peer senders, channels,
relaying, the peer gRPC service and client, manifest gossip and catalogue sync."""
