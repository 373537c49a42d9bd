# syntax=docker/dockerfile:1

# One image holds every dtx binary; the command chooses which one runs:
#
#   docker build -t ghcr.io/vextrus/dtx:latest .
#   docker run --rm ghcr.io/vextrus/dtx:latest /usr/local/bin/dtxctl migrate up
#
# Binaries: orchestrator, outbox-relay, projector, dtxctl. Each reads its
# settings from DTX_* environment variables (see `<binary> --help`).

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/ \
        ./cmd/orchestrator ./cmd/outbox-relay ./cmd/projector ./cmd/dtxctl

# Static binaries on distroless: no shell, no package manager, user 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
# The example saga definitions; mount your own over /etc/dtx/sagas.
COPY examples/order-to-cash/sagas/ /etc/dtx/sagas/
USER nonroot:nonroot
# Admin ports (/healthz, /readyz, /metrics): orchestrator, outbox-relay, projector.
EXPOSE 8081 8082 8083
CMD ["/usr/local/bin/orchestrator"]
