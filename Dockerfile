# The tracescale image that the Kubernetes package (examples/kubernetes/) runs:
#   docker build -t ghcr.io/tracescale/tracescale:0.1.0 .
# The release binary on distroless/cc: glibc and CA certificates (for the OTLP exporter's and
# the Kubernetes client's TLS), no shell, and the nonroot user the Deployment runs as.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tracescale

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/tracescale /usr/local/bin/tracescale
USER 65532:65532
EXPOSE 4317 4318 8888
ENTRYPOINT ["/usr/local/bin/tracescale"]
CMD ["run", "-c", "/etc/tracescale/pipeline.toml"]
