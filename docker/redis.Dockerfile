# A stand-in for the redis:7 image, built from Debian's redis-server, for machines that
# cannot pull images (CI here). Like the official image: data in /data, the command is
# `redis-server ...`.
#
#   docker build -f docker/redis.Dockerfile -t smithers-redis:7 docker
ARG BASE_IMAGE=smithers-base:bookworm
FROM ${BASE_IMAGE}
RUN set -eu; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server; \
    rm -rf /var/lib/apt/lists/*; \
    mkdir -p /data; \
    chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no"]
