# syntax=docker/dockerfile:1
# agentmeter collector: a static binary on a distroless, non-root base.
#
#   docker build -t agentmeter .
#   docker run --rm -p 9464:9464 agentmeter
#
# Ingest (gRPC) listens on localhost:4320 by default: in a Pod, the agent
# container shares the network namespace and reaches it on localhost. Set
# AGENTMETER_GRPC_ENDPOINT=0.0.0.0:4320 (see config.yaml) to expose it beyond.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w" -o /out/collector ./cmd/collector \
 && /out/collector validate --config /src/config.yaml

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/collector /agentmeter/collector
COPY --from=build /src/config.yaml /agentmeter/config.yaml
WORKDIR /agentmeter
USER 65532:65532
# 4320: gRPC ingest and usage API. 9464: /metrics, /healthz, /readyz.
EXPOSE 4320 9464
# memory.limit_mib defaults to 90% of the container's memory limit and sets
# the Go runtime's limit; no GOMEMLIMIT here, which would override it.
ENTRYPOINT ["/agentmeter/collector"]
CMD ["--config", "/agentmeter/config.yaml"]
