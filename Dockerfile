# The smart-autoscaler image: a release binary on distroless (glibc, no shell), running as non-root.
# For registries and machines with a container engine. The development machines here have neither a Docker
# engine nor access to base images, so hack/build-image.sh assembles the same image (binary, its shared
# libraries, non-root user) from scratch with umoci, and tests/image.rs runs the binary from it.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies in their own cached layer: the manifests with stand-in sources for every target they declare.
COPY Cargo.toml Cargo.lock ./
COPY crates/domain/Cargo.toml crates/domain/Cargo.toml
COPY hack/stand-in-sources.sh hack/
RUN hack/stand-in-sources.sh && cargo build --release --locked --bin smart-autoscaler
# Then the sources. COPY keeps the files' own (older) times: touch them so cargo rebuilds the crates.
COPY src ./src
COPY benches ./benches
COPY crates ./crates
RUN touch src/main.rs src/lib.rs crates/*/src/lib.rs \
 && cargo build --release --locked --bin smart-autoscaler \
 && strip target/release/smart-autoscaler

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/smart-autoscaler /usr/local/bin/smart-autoscaler
USER 65532:65532
EXPOSE 6443 8080
ENTRYPOINT ["/usr/local/bin/smart-autoscaler"]
CMD ["serve"]
