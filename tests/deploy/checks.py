"""What the deployment tests check, as functions that return the problems they find.

Each check reads a file (or a chart directory) and returns a list of problems, empty when the
file is right, so that a test can run it on the real file and on a broken copy of it.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
CHART_DIR = REPO / "helm" / "facegate"
PROMETHEUS_DIR = REPO / "monitoring" / "prometheus"
DASHBOARDS_DIR = REPO / "monitoring" / "grafana" / "dashboards"
PROVISIONING_DIR = REPO / "monitoring" / "grafana" / "provisioning"
DOCKERFILE = REPO / "docker" / "Dockerfile"

# The packages FaceGate's services run from: searched for metrics, settings and variables.
SERVICE_PACKAGES = (
    "facegate",
    "schemas",
    "producers",
    "stream_processors",
    "inference_worker",
    "console",
    "trainer",
)
# Series Prometheus makes itself for every target.
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

# A prometheus_client metric constructed with a literal facegate_* name (the name: group 1).
_METRIC_DEFINITION = re.compile(
    r"\b(?:Counter|Gauge|Histogram|Summary|Info|Enum)\(\s*[\"'](facegate_[a-z0-9_]*)[\"']"
)
# A pydantic-settings class with a FACEGATE_* environment prefix.
_SETTINGS_DEFINITION = re.compile(r"\benv_prefix\s*=\s*[\"']FACEGATE_")


def _modules_matching(pattern: re.Pattern[str], root: Path, packages: Iterable[str]) -> list[str]:
    """Dotted names of the modules under ``root/<package>`` whose source matches ``pattern``."""
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if pattern.search(path.read_text(encoding="utf-8")):
                parts = path.relative_to(root).with_suffix("").parts
                found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def metrics_modules(root: Path = REPO, packages: Iterable[str] = SERVICE_PACKAGES) -> list[str]:
    """Every module that defines a facegate_* metric (found in the sources, so that a new
    service's metrics module is found without being listed anywhere)."""
    return _modules_matching(_METRIC_DEFINITION, root, packages)


def defined_metric_names(module: str, root: Path = REPO) -> set[str]:
    """The facegate_* metric names a module defines (as written: counters without _total)."""
    path = root.joinpath(*module.split("."))
    source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return set(_METRIC_DEFINITION.findall(source.read_text(encoding="utf-8")))


def settings_modules(root: Path = REPO, packages: Iterable[str] = SERVICE_PACKAGES) -> list[str]:
    """Every module that defines a settings class with a FACEGATE_* prefix."""
    return _modules_matching(_SETTINGS_DEFINITION, root, packages)


# ---- metric names ---------------------------------------------------------------------------


def exported_metric_names() -> set[str]:
    """Every series name FaceGate's services serve: the families of every module that defines
    facegate_* metrics, read from prometheus_client's registry (with the process and Python
    collectors every service has)."""
    from prometheus_client import REGISTRY

    for module in metrics_modules():
        importlib.import_module(module)
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
        "stateset": ("",),
        "unknown": ("",),
    }
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARIABLES = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(?::[a-z]+)?\}?")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_OFFSETS = re.compile(r"\boffset\s+-?[0-9a-z]+")
_IDENTIFIER = re.compile(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
    | {"and", "or", "unless", "inf", "nan"}
)


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (Grafana variables allowed) selects.

    Strings, label matchers, ranges and label lists are removed first; an identifier followed
    by ``(`` is a function or an aggregation; what is left is a metric name.
    """
    text = _STRINGS.sub('""', expr)
    text = _GRAFANA_VARIABLES.sub("", text)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _LABEL_LISTS.sub(" ", text)
    text = _OFFSETS.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group(0)
        if text[match.end() :].lstrip().startswith("(") or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def unknown_metrics(exprs: Iterable[tuple[str, str]], known: set[str]) -> list[str]:
    """``where: metric`` for every metric an expression uses that is not in ``known``."""
    return [
        f"{where}: {name}"
        for where, expr in exprs
        for name in sorted(promql_metric_names(expr) - known)
    ]


# ---- Prometheus -----------------------------------------------------------------------------


def promtool() -> str | None:
    """The promtool of Debian's prometheus package, if installed."""
    return shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").is_file() else None
    )


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``promtool ARGS`` in ``cwd`` (rule files are found relative to it)."""
    tool = promtool()
    assert tool is not None
    return subprocess.run(
        [tool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def rule_expressions(rules_file: Path) -> Iterator[tuple[str, str]]:
    """(rule name, expression) of every rule of a Prometheus rules file."""
    for group in yaml.safe_load(rules_file.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("record") or rule["alert"], rule["expr"]


def recorded_names(rules_file: Path) -> set[str]:
    """The series names the recording rules of a rules file create."""
    names: set[str] = set()
    for group in yaml.safe_load(rules_file.read_text())["groups"]:
        names.update(rule["record"] for rule in group["rules"] if "record" in rule)
    return names


def rules_problems(rules_file: Path, exported: set[str]) -> list[str]:
    """Rules that use metrics FaceGate does not export (recorded series count as known)."""
    known = exported | PROMETHEUS_SERIES | recorded_names(rules_file)
    return unknown_metrics(rule_expressions(rules_file), known)


# ---- Grafana --------------------------------------------------------------------------------

_PANEL_TYPES = frozenset({"timeseries", "stat", "gauge", "table", "heatmap", "bargauge", "text"})


def _datasource_uids(provisioning: Path) -> set[str]:
    uids: set[str] = set()
    for path in (provisioning / "datasources").glob("*.yml"):
        uids.update(ds["uid"] for ds in yaml.safe_load(path.read_text())["datasources"])
    return uids


def _label_values_query(query: str) -> str:
    # label_values(metric_expr, label) and label_values(label): the metric part only.
    match = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*", query)
    if match:
        return match.group(1)
    return "" if query.strip().startswith("label_values(") else query


def dashboard_expressions(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and query variable of a dashboard."""
    for panel in board.get("panels", []):
        for target in panel.get("targets", []):
            yield f"panel {panel.get('title')!r} {target.get('refId')}", target.get("expr", "")
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            yield f"variable {variable['name']}", _label_values_query(text)


def dashboard_problems(path: Path, known: set[str], provisioning: Path) -> list[str]:
    """What is wrong with a Grafana dashboard file: JSON, structure, data source, metrics."""
    try:
        board = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        return [f"{path.name}: not JSON: {exc}"]
    problems = []
    for key, kind in (("uid", str), ("title", str), ("schemaVersion", int), ("panels", list)):
        if not isinstance(board.get(key), kind):
            problems.append(f"{path.name}: {key} missing or not {kind.__name__}")
    if problems:
        return problems
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", board["uid"]):
        problems.append(f"{path.name}: uid {board['uid']!r} is not a Grafana uid")
    sources = _datasource_uids(provisioning)
    ids = [panel.get("id") for panel in board["panels"]]
    if len(ids) != len(set(ids)) or not all(isinstance(i, int) for i in ids):
        problems.append(f"{path.name}: panel ids must be distinct integers: {ids}")
    for panel in board["panels"]:
        where = f"{path.name}: panel {panel.get('title')!r}"
        if panel.get("type") not in _PANEL_TYPES:
            problems.append(f"{where}: unknown type {panel.get('type')!r}")
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in "hwxy") or grid["x"] + grid["w"] > 24:
            problems.append(f"{where}: gridPos {grid} is not inside the 24-column grid")
        if panel.get("datasource", {}).get("uid") not in sources:
            problems.append(f"{where}: data source {panel.get('datasource')} is not provisioned")
        targets = panel.get("targets", [])
        refs = [t.get("refId") for t in targets]
        if not targets or len(refs) != len(set(refs)):
            problems.append(f"{where}: needs targets with distinct refIds")
        if any(not t.get("expr", "").strip() for t in targets):
            problems.append(f"{where}: a target has no expression")
    problems += [f"{path.name}: {p}" for p in unknown_metrics(dashboard_expressions(board), known)]
    return problems


# ---- docker-compose -------------------------------------------------------------------------


def compose_schema_problems(compose_file: Path) -> list[str]:
    """The Compose Specification's JSON schema, as vendored by check-jsonschema."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(compose_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return [] if result.returncode == 0 else [result.stdout.strip() or result.stderr.strip()]


def settings_classes() -> list[type[Any]]:
    """Every settings class with a FACEGATE_* prefix, from the modules that define them."""
    from pydantic_settings import BaseSettings

    classes = []
    for name in settings_modules():
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseSettings)
                and value.__module__ == name
                and str(value.model_config.get("env_prefix", "")).startswith("FACEGATE_")
            ):
                classes.append(value)
    return classes


def facegate_variable_names() -> set[str]:
    """Every FACEGATE_* variable FaceGate reads: settings fields and names used in the code."""
    from pydantic_settings import BaseSettings

    names = set()
    for cls in settings_classes():
        prefix = str(cls.model_config.get("env_prefix", ""))
        for field_name, field in cls.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseSettings):
                continue  # a nested connection: set through its own prefix
            names.add(f"{prefix}{field_name}".upper())
    # Variables read directly (FACEGATE_HOME, FACEGATE_LOG_LEVEL, ...) appear in the sources.
    sources = [REPO / "docker" / "healthcheck.py"]
    for package in SERVICE_PACKAGES:
        sources += (REPO / package).rglob("*.py")
    for path in sources:
        names.update(re.findall(r"\bFACEGATE_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    return names


def compose_problems(compose_file: Path, known_variables: set[str]) -> list[str]:
    """What the schema cannot see: dependencies, health checks, variables, mounted files."""
    spec = yaml.safe_load(compose_file.read_text())
    services: dict[str, dict[str, Any]] = spec["services"]
    problems = []
    for name, service in services.items():
        depends = service.get("depends_on", {})
        for target, condition in depends.items() if isinstance(depends, dict) else []:
            if target not in services:
                problems.append(f"{name}: depends on unknown service {target}")
                continue
            wanted = condition.get("condition")
            other = services[target]
            has_check = "healthcheck" in other or other.get("build", {}).get("target") == "runtime"
            disabled = other.get("healthcheck", {}).get("disable", False)
            if wanted == "service_healthy" and (not has_check or disabled):
                problems.append(f"{name}: waits for {target} to be healthy, which has no check")
            if wanted == "service_completed_successfully" and other.get("restart") not in (
                None,
                "no",
            ):
                problems.append(f"{name}: waits for {target} to finish, which restarts")
        environment = service.get("environment", {})
        for key in environment if isinstance(environment, dict) else []:
            if key.startswith("FACEGATE_") and key not in known_variables:
                problems.append(f"{name}: {key} is not a FaceGate setting")
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith(".") and not (compose_file.parent / source).exists():
                problems.append(f"{name}: mounts {source}, which does not exist")
    return problems


def scrape_problems(compose_file: Path, prometheus_file: Path) -> list[str]:
    """Services that serve metrics (a FACEGATE_*_METRICS_PORT) but that no scrape job finds on
    that port, and scrape jobs that name no service."""
    services = yaml.safe_load(compose_file.read_text())["services"]
    config = yaml.safe_load(prometheus_file.read_text())
    scraped: dict[str, set[int]] = {}
    problems = []
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                scraped.setdefault(name, set()).add(int(sd["port"]))
                if name not in services:
                    problems.append(f"{job['job_name']}: scrapes {name}, which is no service")
    for name, service in services.items():
        environment = service.get("environment", {})
        ports = {
            int(value)
            for key, value in (environment.items() if isinstance(environment, dict) else [])
            if key.startswith("FACEGATE_") and key.endswith("_METRICS_PORT")
        }
        for port in sorted(ports - scraped.get(name, set())):
            problems.append(f"{name}: serves metrics on {port}, which no scrape job reads")
    return problems


def image_writable_paths(dockerfile: Path) -> set[str]:
    """Directories the final stage gives its user: ``chown``ed ones and the user's home."""
    _, steps = dockerfile_stages(dockerfile)[-1]
    paths: set[str] = set()
    for kind, args in steps:
        if kind != "RUN":
            continue
        for segment in args.split("&&"):
            words = segment.split()
            if "chown" in words:
                paths.update(w.rstrip("/") for w in words if w.startswith("/"))
            if "useradd" in words and "--home-dir" in words:
                paths.add(words[words.index("--home-dir") + 1].rstrip("/"))
    return paths


def volume_problems(compose_file: Path, dockerfile: Path) -> list[str]:
    """Writable named volumes of FaceGate's (non-root) containers mounted where the image does
    not give its user the directory: a new volume takes that directory's owner, so the
    service could not write to it."""
    services = yaml.safe_load(compose_file.read_text())["services"]
    writable = image_writable_paths(dockerfile)
    problems = []
    for name, service in services.items():
        if service.get("build", {}).get("target") != "runtime":
            continue
        for volume in service.get("volumes", []):
            parts = str(volume).split(":")
            if len(parts) < 2 or parts[0].startswith((".", "/")) or "ro" in parts[2:]:
                continue  # a bind mount or a read-only volume
            if parts[1].rstrip("/") not in writable:
                problems.append(
                    f"{name}: volume {parts[0]} on {parts[1]}, not writable by the user"
                )
    return problems


def compose_commands(compose_file: Path) -> Iterator[tuple[str, list[str]]]:
    """(service, arguments) of every service that runs a `facegate` command: the FaceGate image
    with its entrypoint (services that replace the entrypoint run other programs)."""
    services = yaml.safe_load(compose_file.read_text())["services"]
    for name, service in services.items():
        if service.get("build", {}).get("target") != "runtime" or "entrypoint" in service:
            continue
        command = service.get("command", [])
        yield name, command.split() if isinstance(command, str) else [str(c) for c in command]


def pod_spec(document: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a rendered Deployment, Job or CronJob; None for other kinds."""
    kind = document.get("kind")
    if kind in ("Deployment", "Job"):
        return document["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    if kind == "CronJob":
        return document["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return None


def chart_commands(documents: list[dict[str, Any]]) -> Iterator[tuple[str, list[str]]]:
    """(workload/container, arguments) of every rendered Deployment or CronJob container that
    runs `facegate` (the image's entrypoint: no ``command`` of its own)."""
    for document in documents:
        spec = pod_spec(document)
        if spec is None or document.get("kind") == "Job":
            continue
        for container in spec["containers"]:
            if "command" not in container:
                where = f"{document['metadata']['name']}/{container['name']}"
                yield where, [str(a) for a in container.get("args", [])]


def cli_problems(commands: Iterable[tuple[str, list[str]]]) -> list[str]:
    """Commands that `facegate` does not have, or options its commands do not take."""
    import click

    from facegate.cli import cli

    problems = []
    for where, argv in commands:
        command: click.Command = cli
        path = ["facegate"]
        words = list(argv)
        while isinstance(command, click.Group) and words and not words[0].startswith("-"):
            word = words.pop(0)
            sub = command.commands.get(word)
            if sub is None:
                problems.append(f"{where}: `{' '.join(path)}` has no command {word!r}")
                break
            command, path = sub, [*path, word]
        else:
            if isinstance(command, click.Group) and not command.invoke_without_command:
                problems.append(f"{where}: `{' '.join(path)}` needs a subcommand")
                continue
            options = {o for param in command.params for o in (*param.opts, *param.secondary_opts)}
            options |= {"-h", "--help"}
            for word in words:
                option = word.split("=", 1)[0]
                if option.startswith("-") and option not in options:
                    problems.append(f"{where}: `{' '.join(path)}` has no option {option}")
    return problems


# ---- Helm -----------------------------------------------------------------------------------


def render_chart(chart_dir: Path, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's manifests rendered offline with the Helm SDK, as parsed documents."""
    import helm_python as helm

    with helm.Chart.load(str(chart_dir)) as chart:
        rendered = chart.render(values, name="exam", namespace="facegate")
    documents = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".txt"):
            continue
        documents += [doc for doc in yaml.safe_load_all(text) if doc]
    return documents


def lint_chart(chart_dir: Path, values: dict[str, Any] | None = None) -> list[str]:
    """``helm lint --strict``: errors and warnings (information messages are not problems)."""
    import helm_python as helm

    report = helm.lint(str(chart_dir), values, strict=True)
    messages = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    return [f"{m['path']}: {m['error']}" for m in messages] + list(report.get("errors", []))


def rendered_variable_names(documents: list[dict[str, Any]]) -> set[str]:
    """The FACEGATE_* variables the rendered pods get: their containers' env and the keys of
    the ConfigMaps and Secrets they take whole (envFrom); mounted files are not variables."""
    sources: dict[tuple[str, str], dict[str, Any]] = {}
    for document in documents:
        if document.get("kind") in ("ConfigMap", "Secret"):
            data = {**document.get("data", {}), **document.get("stringData", {})}
            sources[(document["kind"], document["metadata"]["name"])] = data
    names = set()
    for document in documents:
        spec = pod_spec(document)
        if spec is None:
            continue
        for container in spec["containers"]:
            names |= {e["name"] for e in container.get("env", [])}
            for source in container.get("envFrom", []):
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in source:
                        names |= set(sources.get((kind, source[key]["name"]), {}))
    return {name for name in names if name.startswith("FACEGATE_")}


# Custom resources of the Prometheus Operator: no schema in kubernetes-validate.
CUSTOM_KINDS = frozenset({"ServiceMonitor", "PrometheusRule"})


def manifest_problems(documents: list[dict[str, Any]], kube_version: str) -> list[str]:
    """Kubernetes schema validation (strict: unknown fields are errors) of built-in kinds."""
    import kubernetes_validate

    problems = []
    for document in documents:
        if document.get("kind") in CUSTOM_KINDS:
            continue
        name = f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(document, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{name}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{name}: no schema: {exc}")
    return problems


# ---- Dockerfile -----------------------------------------------------------------------------


def dockerfile_stages(dockerfile: Path) -> list[tuple[str, list[tuple[str, str]]]]:
    """(stage name, [(INSTRUCTION, arguments)]) per stage, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    stages: list[tuple[str, list[tuple[str, str]]]] = []
    for line in logical:
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = arguments.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append((name, []))
        elif stages:
            stages[-1][1].append((instruction, arguments.strip()))
    return stages


def dockerfile_problems(dockerfile: Path, context: Path) -> list[str]:
    """The image's promises: multi-stage, models built, non-root, health check, real sources."""
    stages = dockerfile_stages(dockerfile)
    if len(stages) < 2:
        return ["not a multi-stage build"]
    problems = []
    names = [name for name, _ in stages]
    final_name, final = stages[-1]
    runs = " ".join(args for _, steps in stages for kind, args in steps if kind == "RUN")
    if "facegate models build" not in runs:
        problems.append("models are not built at build time (`facegate models build`)")
    if "torch==" not in runs or "--index-url" not in runs:
        problems.append("torch is not installed from a CPU wheel index")
    users = [args for kind, args in final if kind == "USER"]
    if not users or users[-1].split(":")[0] in ("0", "root"):
        problems.append(f"final stage {final_name} runs as root")
    if not any(kind == "HEALTHCHECK" and "CMD" in args for kind, args in final):
        problems.append(f"final stage {final_name} has no HEALTHCHECK")
    if "build-essential" in " ".join(args for kind, args in final if kind == "RUN"):
        problems.append(f"final stage {final_name} installs a compiler")
    ignored = [
        line.strip()
        for line in (context / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for name, steps in stages:
        for kind, args in steps:
            if kind != "COPY":
                continue
            words = args.split()
            source_from = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
            paths = [w for w in words if not w.startswith("--")][:-1]
            if source_from is not None:
                if source_from not in names[: names.index(name)]:
                    problems.append(f"{name}: COPY --from={source_from}: no such earlier stage")
                continue
            for path in paths:
                if not (context / path).exists():
                    problems.append(f"{name}: COPY {path}: not in the build context")
                elif any(path == pattern or path.startswith(pattern + "/") for pattern in ignored):
                    problems.append(f"{name}: COPY {path}: excluded by .dockerignore")
    return problems
