# A small image: a static-ish release binary on distroless (glibc, no shell), running as non-root.
# Not built in this repository's CI: the development machines have no Docker engine.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
RUN cargo build --release --locked && strip target/release/smart-autoscaler

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/smart-autoscaler /usr/local/bin/smart-autoscaler
USER 65532:65532
EXPOSE 6443 8080
ENTRYPOINT ["/usr/local/bin/smart-autoscaler"]
CMD ["serve"]
