"""Generated protobuf and gRPC code of the agentmeter.v1 API (proto/agentmeter/v1).

Regenerate with `make proto` at the repository root; never edit by hand.
"""
