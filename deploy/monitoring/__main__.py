"""python -m deploy.monitoring render|check: see deploy/monitoring/__init__.py."""

from __future__ import annotations

import argparse

from deploy import monitoring


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=monitoring.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["render", "check"])
    args = p.parse_args(argv)
    if args.action == "render":
        for path in monitoring.render():
            print(f"wrote {path.relative_to(monitoring.ROOT)}")
        return
    tool = monitoring.promtool()
    if tool is None:
        raise SystemExit("promtool not found: install Debian's prometheus package (apt-get install prometheus)")
    if problems := monitoring.kubernetes_sd_problems(monitoring.load(monitoring.K8S_CONFIG)):
        raise SystemExit("prometheus.k8s.yml: " + "; ".join(problems))
    if not monitoring.kubernetes_sd_supported(tool):
        print("this promtool has no Kubernetes discovery (Debian's): prometheus.k8s.yml checked with static targets")
    failed = False
    for what, done in monitoring.checks(tool).items():
        print(f"promtool {what}: {'ok' if done.returncode == 0 else 'FAILED'}")
        if done.returncode != 0:
            print(done.stdout + done.stderr)
            failed = True
    if stale := monitoring.stale():
        print(f"deploy/k8s/base/prometheus/ is stale ({', '.join(stale)}): run make k8s-monitoring")
        failed = True
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
