# The cockpit agent for real registries (the dev cluster builds the same image without Docker:
# scripts/dev-cluster, build_images). Build from the repository root:
#   docker build -f docker/agent.Dockerfile -t REGISTRY/cockpit/agent:VERSION .
# and point cockpit at it: COCKPIT_AGENT_IMAGE=REGISTRY/cockpit/agent:VERSION
FROM python:3.11-slim-bookworm

COPY cockpit/agent/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir --target /opt/cockpit/site -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Only what the agent imports: the pure core and the agent itself.
COPY cockpit/__init__.py cockpit/errors.py /opt/cockpit/site/cockpit/
COPY cockpit/core/ /opt/cockpit/site/cockpit/core/
COPY cockpit/agent/ /opt/cockpit/site/cockpit/agent/
# Bytecode now: the root filesystem is read-only at run time.
RUN python -m compileall -q --invalidation-mode unchecked-hash /opt/cockpit/site

ENV PYTHONPATH=/opt/cockpit/site PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
EXPOSE 2222
CMD ["python3", "-m", "cockpit.agent"]
