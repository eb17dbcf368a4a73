// Package e2e holds agentmeter's end-to-end tests. They build the real
// collector binary once, start it on free loopback ports, and talk to it the
// way its peers do: agents over gRPC, Prometheus over HTTP, an OTLP backend
// receiving its pushes, and an operator sending SIGTERM or validating a
// config. The package has no code of its own outside the tests.
package e2e
