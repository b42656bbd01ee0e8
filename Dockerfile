# Both binaries in one minimal, non-root image. CI here cannot build images (no Docker engine);
# e2e/kind/ builds and loads it for users who have Docker.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p hyperion-vault-controller -p hyperion-vault-api \
 && install -D target/release/hyperion-vault-controller /out/hyperion-vault-controller \
 && install -D target/release/hyperion-vault-api /out/hyperion-vault-api

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 8200 8080
ENTRYPOINT ["/usr/local/bin/hyperion-vault-api"]
