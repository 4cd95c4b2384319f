# keywatch worker image: `docker build -t keywatch .`
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --prefix=/install ".[rocksdb]"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home /var/lib/keywatch keywatch \
    && mkdir -p /var/lib/keywatch && chown keywatch /var/lib/keywatch
COPY --from=build /install /usr/local
USER keywatch
WORKDIR /var/lib/keywatch
ENV KEYWATCH_DATA_DIR=/var/lib/keywatch/data \
    KEYWATCH_STORE=rocksdb://
ENTRYPOINT ["keywatch"]
CMD ["worker"]
