# syntax=docker/dockerfile:1

# --- build -----------------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src

# Dependencies first, against stub sources, so that a code change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY entity/Cargo.toml entity/
COPY migration/Cargo.toml migration/
RUN mkdir -p src entity/src migration/src tests/api \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && touch entity/src/lib.rs migration/src/lib.rs && echo 'fn main() {}' > migration/src/main.rs \
 && echo 'fn main() {}' > tests/api/main.rs \
 && cargo build --release --locked --bin tolstoy \
 && rm -rf src entity/src migration/src tests

COPY . .
# The stub build left newer artefacts than the copied sources; touch so cargo rebuilds ours.
RUN touch src/main.rs src/lib.rs entity/src/lib.rs migration/src/lib.rs migration/src/main.rs \
 && cargo build --release --locked --bin tolstoy

# --- run -------------------------------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: TLS to Neon and to AWS. curl: the HEALTHCHECK. Debian's security updates move
# the exact versions, so they are not pinned (hadolint DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tolstoy \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /app tolstoy
COPY --from=build /src/target/release/tolstoy /usr/local/bin/tolstoy
WORKDIR /app
USER 10001:10001
ENV APP_ENV=production HOST=0.0.0.0 PORT=3000
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:3000/health"]
ENTRYPOINT ["tolstoy"]
CMD ["serve"]
