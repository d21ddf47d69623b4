# engagewatch worker / CLI image (used by docker-compose.yml).
FROM python:3.11.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream stream
COPY alerts alerts
COPY config config
RUN pip install --no-cache-dir .
ENV ENGAGEWATCH_WEB_HOST=0.0.0.0
ENTRYPOINT ["engagewatch"]
CMD ["worker"]
