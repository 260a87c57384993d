# Multi-stage build: a static dd binary on a minimal, non-root image.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/dd . \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/dd /usr/local/bin/dd
COPY --from=build --chown=nonroot:nonroot /out/data /data
# Listen on every interface inside the container; config validation then requires a secret (DD_SECRET).
ENV DD_STORE__PATH=/data \
    DD_REST__LISTEN=0.0.0.0:8000 \
    DD_GATEWAY__LISTEN=0.0.0.0:8001 \
    DD_CACHE__LISTEN=0.0.0.0:8002
VOLUME /data
EXPOSE 8000 8001 8002
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/dd"]
CMD ["--role=all"]
