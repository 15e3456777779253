"""A second implementation of docs/protocol.md, written from the document alone.

It shares no code with node/ or registry/ and uses no protobuf library, so agreement with
docs/protocol-vectors.json is evidence that the document, not our code, defines the protocol.
"""
