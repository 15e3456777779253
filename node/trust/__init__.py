"""The signed-envelope layer: signing and verifying envelopes, seen nonces, sealed payloads,
this node's key and manifest (the keyring), and the audit chain of every envelope."""
