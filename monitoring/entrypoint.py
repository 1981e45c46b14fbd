"""Write Prometheus' configuration from the FEDSTACK_* environment, then become Prometheus.

Targets: the transport, transaction and pdu services' internal /metrics (their internal
URLs), and the messaging service's own series (`/metrics?scope=service` on the domain API,
with its bearer token from FEDSTACK_API_TOKEN). PROMETHEUS_LISTEN: where its web UI and
HTTP API listen (default 0.0.0.0:9090); PROMETHEUS_SCRAPE_INTERVAL (default 5s)."""
import os
from urllib.parse import urlsplit

HOME = "/prometheus"
jobs = []
for service in ("transport", "transaction", "pdu", "messaging"):
    url = urlsplit(os.environ[f"FEDSTACK_{service.upper()}_URL"])
    job = [f"  - job_name: {service}", f"    static_configs: [{{targets: ['{url.netloc}']}}]"]
    if service == "messaging":
        with open(f"{HOME}/api_token", "w") as f:
            f.write(os.environ["FEDSTACK_API_TOKEN"])
        os.chmod(f"{HOME}/api_token", 0o600)
        job += ["    params: {scope: [service]}",
                f"    authorization: {{credentials_file: {HOME}/api_token}}"]
    jobs.append("\n".join(job))
interval = os.environ.get("PROMETHEUS_SCRAPE_INTERVAL", "5s")
with open(f"{HOME}/prometheus.yml", "w") as f:
    f.write(f"global: {{scrape_interval: {interval}, evaluation_interval: {interval}}}\n"
            "scrape_configs:\n" + "\n".join(jobs) + "\n")
os.execvp("prometheus", ["prometheus", f"--config.file={HOME}/prometheus.yml",
                         f"--storage.tsdb.path={HOME}/data",
                         "--web.listen-address=" + os.environ.get("PROMETHEUS_LISTEN", "0.0.0.0:9090")])
