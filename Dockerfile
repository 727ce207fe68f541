# Builds every Mercato binary into one small runtime image. The compose file runs each
# binary from it. Query metadata comes from the committed .sqlx/, so no database is needed
# at build time.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
ENV SQLX_OFFLINE=true
RUN cargo build --release --workspace --bins \
 && mkdir /out \
 && cp target/release/mercato target/release/mercato-profiling target/release/mercato-content target/release/mercato-metrics /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 mercato
COPY --from=build /out/ /usr/local/bin/
COPY config /etc/mercato/config
ENV MERCATO_CONFIG_DIR=/etc/mercato/config \
    MERCATO__SERVER__HOST=0.0.0.0 \
    MERCATO__LOG__FORMAT=json
USER mercato
EXPOSE 8080
CMD ["mercato", "serve"]
