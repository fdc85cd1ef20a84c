# Multi-stage build of celeriac on Debian 12 with the same packages as scripts/deps.sh; the
# runtime image holds `make install PREFIX=/opt/celeriac` and runs the worker as user celeriac.
FROM debian:12 AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        build-essential pkg-config librabbitmq-dev libhiredis-dev libmsgpack-dev \
        libjansson-dev libcmocka-dev libsqlite3-dev libssl-dev libmicrohttpd-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make -j"$(nproc)" BUILD=/build all && make BUILD=/build PREFIX=/opt/celeriac install

FROM debian:12-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
        librabbitmq4 libhiredis0.14 libmsgpackc2 libjansson4 libsqlite3-0 libssl3 \
        libmicrohttpd12 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/celeriac --create-home celeriac
COPY --from=build /opt/celeriac /opt/celeriac
ENV PATH=/opt/celeriac/bin:$PATH \
    CELERIAC_SERVICES=/opt/celeriac/lib/celeriac/services \
    CELERIAC_DATA_DIR=/var/lib/celeriac
USER celeriac
WORKDIR /var/lib/celeriac
VOLUME /var/lib/celeriac
# the metrics port when CELERIAC_METRICS_PORT=9808 (compose.yaml sets it)
EXPOSE 9808
# SIGTERM = warm shutdown (running jobs finish within CELERIAC_SHUTDOWN_TIMEOUT)
STOPSIGNAL SIGTERM
ENTRYPOINT ["worker"]
