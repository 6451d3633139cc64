# Multi-stage build: a static binary on a distroless, non-root base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /egressd ./cmd/egressd

FROM gcr.io/distroless/static:nonroot
COPY --from=build /egressd /egressd
COPY deployments/egressd.example.yaml /etc/egressd/egressd.yaml
USER nonroot
EXPOSE 3128 1080 9090
ENTRYPOINT ["/egressd", "serve"]
CMD ["--config", "/etc/egressd/egressd.yaml"]
