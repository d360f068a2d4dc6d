# Sandbox image for Smithers sandbox steps.
#
# Deliberately tiny: a POSIX shell and coreutils, an unprivileged user and /work.
# Steps bring their own tools by choosing another image (SandboxSpec.image); this one
# is the default and the one the integration tests run against. No network access is
# needed to build it.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# uid/gid 10001 match the user the runtime forces (`user=10001:10001`), so files the
# step writes under /work are owned by it and nothing in the image is writable by it.
RUN groupadd --gid 10001 sandbox \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /work \
       --shell /bin/sh sandbox \
    && mkdir -p /work \
    && chown 10001:10001 /work \
    && chmod 0700 /work

ENV HOME=/work LANG=C.UTF-8
WORKDIR /work
USER 10001:10001
CMD ["/bin/sh"]
