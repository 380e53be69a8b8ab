"""The cockpit command: args + config -> real adapters -> engine -> UI or headless."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cockpit import __version__
from cockpit.errors import CockpitError, UsageError

if TYPE_CHECKING:
    from cockpit.core.config import CockpitConfig
    from cockpit.core.events import Event
    from cockpit.engine.intercept import InterceptSession
    from cockpit.engine.session import ClusterLink, ClusterStarter, Engine

UI_MODULE = "cockpit.ui.app"
_SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug: bool = getattr(args, "debug", False)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except CockpitError as exc:
        if debug:
            traceback.print_exc()
        _error(exc.one_line())
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `cockpit schema | head`: the reader has what it wanted
        _quiet_closed_stdout()
        return 0
    except Exception as exc:
        if debug:
            traceback.print_exc()
            return 1
        _error(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return 1


def _error(message: str) -> None:
    print(f"cockpit: error: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cockpit",
        description="A terminal cockpit for hybrid Kubernetes development: "
        "one service runs here, the rest in the cluster.",
    )
    parser.add_argument("--version", action="version", version=f"cockpit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    # Options every subcommand accepts (also after the subcommand's name).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors"
    )
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="cockpit.yaml to use (default: the nearest one in this or a parent directory)",
    )
    parser.add_argument("--config", metavar="PATH", help=argparse.SUPPRESS)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    up = commands.add_parser(
        "up", parents=[common], help="run SERVICE locally and show the session"
    )
    up.add_argument(
        "service", metavar="SERVICE", help="the service (from cockpit.yaml) to run here"
    )
    up.add_argument(
        "--headless",
        action="store_true",
        help="no UI: JSON lines on stdout, JSON commands on stdin, until SIGINT/SIGTERM",
    )
    up.add_argument(
        "--intercept",
        choices=("global", "personal"),
        help="start with the cluster's traffic for SERVICE coming here: all of it (global) or "
        "requests carrying this session's header (personal)",
    )
    up.set_defaults(handler=cmd_up)

    down = commands.add_parser(
        "down",
        parents=[common],
        help="clean up after a crash: restore intercepted services, remove the agent",
    )
    down.add_argument("--namespace", metavar="NS", help="the namespace (default: cockpit.yaml's)")
    down.add_argument("--context", metavar="CTX", help="the kubeconfig context")
    down.set_defaults(handler=cmd_down)

    validate = commands.add_parser(
        "validate", parents=[common], help="check cockpit.yaml and report every problem"
    )
    validate.set_defaults(handler=cmd_validate)

    schema = commands.add_parser(
        "schema", parents=[common], help="print the JSON Schema of cockpit.yaml"
    )
    schema.set_defaults(handler=cmd_schema)

    env = commands.add_parser(
        "env",
        parents=[common],
        help="write SERVICE's cluster environment, pointed at the port-forwards, as a .env file",
    )
    env.add_argument("service", metavar="SERVICE", help="the service whose Deployment to read")
    env.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write here (mode 0600: it holds Secret values) instead of to stdout",
    )
    env.add_argument("--container", metavar="NAME", help="the container (default: the served one)")
    env.set_defaults(handler=cmd_env)

    doctor = commands.add_parser(
        "doctor",
        parents=[common],
        help="check the cluster: API reachable, namespace, every permission cockpit needs",
    )
    doctor.add_argument("--namespace", metavar="NS", help="the namespace (default: cockpit.yaml's)")
    doctor.add_argument("--context", metavar="CTX", help="the kubeconfig context")
    doctor.set_defaults(handler=cmd_doctor)

    shell = commands.add_parser(
        "shell",
        parents=[common],
        help="an interactive shell (or a command) in a ready pod of SERVICE",
    )
    shell.add_argument("service", metavar="SERVICE", help="the service whose pod to open")
    shell.add_argument("-c", "--container", metavar="NAME", help="the container (default: first)")
    shell.add_argument("--namespace", metavar="NS", help="the namespace (default: cockpit.yaml's)")
    shell.add_argument("--context", metavar="CTX", help="the kubeconfig context")
    shell.add_argument(
        "command", nargs=argparse.REMAINDER, help="after --: the command to run (default: a shell)"
    )
    shell.set_defaults(handler=cmd_shell)

    init = commands.add_parser(
        "init", parents=[common], help="write a starter cockpit.yaml (to --config, or here)"
    )
    init.add_argument("--service", metavar="NAME", help="the service to run locally")
    init.add_argument("--command", metavar="CMD", help="the command that runs it locally")
    init.add_argument("--port", metavar="N", type=_port, help="the port it listens on")
    init.add_argument(
        "--remote",
        metavar="NAME",
        action="append",
        default=[],
        help="a service that stays in the cluster (repeatable)",
    )
    init.add_argument("--namespace", metavar="NS", help="the app's namespace")
    init.add_argument("--context", metavar="CTX", help="the kubeconfig context")
    init.add_argument(
        "--from-cluster",
        action="store_true",
        help="take the namespace's services (and SERVICE's port) from the live cluster",
    )
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(handler=cmd_init)
    return parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {port}")
    return port


# -- commands --------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from cockpit.adapters.configfile import kube_target, load_config

    config = load_config(args.config)
    config.local_service(args.service)
    target = kube_target(config)

    from cockpit.adapters.process import process_factory
    from cockpit.engine.session import Engine
    from cockpit.headless import run_headless

    cluster = None
    if target.context:
        cluster = _cluster_starter(args.service, target.context, target.namespace)
    # else: no kubeconfig context at all; the local dev loop still works on its own (the
    # session says so in its stream)

    engine = Engine(
        config,
        args.service,
        process_factory=process_factory,
        base_env=dict(os.environ),
        context=target.context,
        namespace=target.namespace,
        intercept=_intercept_factory(config, args.service, target.context, target.namespace),
        intercept_mode=args.intercept,
        cluster=cluster,
        hot_reload=True,
    )
    if not args.headless:
        run_ui = _load_ui()
        if run_ui is not None:
            return run_ui(
                engine,
                keys=config.keys,
                theme=config.theme,
                title_info={
                    "context": target.context,
                    "namespace": target.namespace,
                    "session": engine.session_id,
                    "service": args.service,
                },
                shell=_shell_argv(config, args.service, target.context, target.namespace),
            )
        print(
            "cockpit: the terminal UI is not part of this build; running headless",
            file=sys.stderr,
        )
    stdin_fd = _stdin_fd()
    try:
        return asyncio.run(run_headless(engine, out=sys.stdout, stdin_fd=stdin_fd))
    finally:
        _quiet_closed_stdout()


def _shell_argv(
    config: CockpitConfig, service: str, context: str, namespace: str
) -> Callable[[str], list[str]]:
    """What the UI's shell key runs for a service: for the local one, the user's shell in its
    directory; for any other, `cockpit shell` into one of its ready pods (a real TTY)."""
    local_dir = os.path.join(config.base_dir, config.local_service(service).cwd)

    def argv(name: str) -> list[str]:
        if name == service:
            return ["/bin/sh", "-c", 'cd "$1" && exec "${SHELL:-/bin/sh}"', "sh", local_dir]
        command = [sys.executable, "-m", "cockpit", "shell", name]
        if namespace:
            command += ["--namespace", namespace]
        if context:
            command += ["--context", context]
        return command

    return argv


def _cluster_starter(service: str, context: str, namespace: str) -> ClusterStarter:
    """Connects a session to its namespace: the live model and pod logs of every service,
    a port-forward per other service, and ``service``'s environment pointed at them."""

    async def start(engine: Engine) -> ClusterLink:
        from cockpit.adapters.envsource import KubeEnvSource
        from cockpit.adapters.kube import Kube
        from cockpit.adapters.podstream import ApiServer
        from cockpit.adapters.podsync import KubePodFiles
        from cockpit.adapters.portforward import KubePortForwarder
        from cockpit.adapters.servicecatalog import KubeServiceCatalog, load_api_client
        from cockpit.engine.cluster import ClusterWatcher
        from cockpit.engine.forwards import start_outbound
        from cockpit.engine.sync import RemoteSync

        kube = await asyncio.to_thread(Kube.load, None, context or None, namespace)
        watcher = ClusterWatcher(kube, namespace, None, engine.publish, on_lines=engine.ingest)
        await watcher.start()  # one clear line for an unknown namespace or no access
        api_client = await asyncio.to_thread(load_api_client, context or None)
        forwarder = KubePortForwarder(ApiServer.from_configuration(kube.configuration))
        try:
            outbound = await start_outbound(
                forwarder,
                KubeServiceCatalog(api_client),
                KubeEnvSource(api_client),
                namespace,
                service,
                engine.publish,
            )
        except BaseException:
            forwarder.close()
            await watcher.stop()
            raise
        for note in outbound.env.notes:
            engine.say(f"env: {note}")
        # sync: rules of the services left in the cluster push local files into their pods.
        sync = RemoteSync(engine.config, service, namespace, KubePodFiles(kube), engine)
        await sync.start()  # a bad rule is its own failed row, never the session's end
        watcher.on_pods(sync.update_pods)
        return _SessionCluster(watcher, outbound, forwarder, sync)

    return start


class _SessionCluster:
    """The running cluster side of ``cockpit up``; stops in reverse order of start."""

    def __init__(self, watcher: Any, outbound: Any, forwarder: Any, sync: Any) -> None:
        self._watcher, self._outbound, self._forwarder = watcher, outbound, forwarder
        self._sync = sync
        self.env: dict[str, str] = outbound.env.as_dict()

    async def toggle_forward(self, service: str) -> str:
        summary: str = await self._outbound.forwards.toggle(service)
        return summary

    def use_tunnel(self, tunnel: Any) -> None:
        self._outbound.forwards.use_tunnel(tunnel)

    async def restart(self, service: str) -> str:
        message: str = await self._watcher.restart(service)
        return message

    async def delete_pod(self, service: str, pod: str) -> str:
        message: str = await self._watcher.delete_pod(pod, service=service)
        return message

    async def stop(self) -> None:
        try:
            await self._sync.stop()
            await self._outbound.forwards.stop()
            self._forwarder.close()
        finally:
            await self._watcher.stop()


def _intercept_factory(
    config: CockpitConfig, service: str, context: str, namespace: str
) -> Callable[[str, Callable[[Event], None]], InterceptSession]:
    """(session id, publish) -> the intercept of ``service`` (agent settings from the
    ``COCKPIT_AGENT_*`` environment: image, grace, idle TTL, keepalive, drain)."""
    local = config.local_service(service)

    def make(session_id: str, publish: Callable[[Event], None]) -> InterceptSession:
        from cockpit.core.agent_spec import AgentSettings
        from cockpit.engine.intercept import kube_intercept

        if local.port is None:
            raise UsageError(
                f"cannot intercept {service}: cockpit.yaml gives no port for it",
                hint="set services.{service}.port to the port the local process listens on",
            )
        try:
            settings = AgentSettings.from_env(os.environ)
        except ValueError as exc:
            raise UsageError(f"a COCKPIT_AGENT_* variable is not a number: {exc}") from exc
        return kube_intercept(
            kubeconfig=None,
            context=context or None,
            namespace=namespace,
            service=service,
            session_id=session_id,
            local_port=local.port,
            settings=settings,
            extra_ports={p: p for p in local.extra_ports},
            header=local.intercept.header,
            value_template=local.intercept.value_template,
            publish=publish,
        )

    return make


def cmd_down(args: argparse.Namespace) -> int:
    from cockpit.adapters.configfile import kube_target, load_config
    from cockpit.errors import ConfigError

    try:
        config = load_config(args.config)
        target = kube_target(config)
        context, namespace = args.context or target.context, args.namespace or target.namespace
    except ConfigError:
        if not args.namespace:
            raise
        context, namespace = args.context, args.namespace  # no cockpit.yaml needed

    from cockpit.adapters.agent import AgentCluster, ApiJson

    cluster = AgentCluster(ApiJson.from_kubeconfig(None, context or None), namespace)
    print(f"cockpit: {cluster.teardown().summary(namespace)}")
    return 0


def _cluster_target(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """Context and namespace: the flags, else cockpit.yaml's, else the kubeconfig's."""
    from cockpit.adapters.configfile import kube_target, load_config
    from cockpit.errors import ConfigError

    try:
        target = kube_target(load_config(args.config))
    except ConfigError:
        if getattr(args, "config", None):
            raise  # an explicit cockpit.yaml that cannot be used
        return args.context or None, args.namespace or None
    return args.context or target.context or None, args.namespace or target.namespace


def cmd_doctor(args: argparse.Namespace) -> int:
    context, namespace = _cluster_target(args)
    from cockpit.adapters.kube import Kube
    from cockpit.core.rbac import missing_permissions_line, render_doctor
    from cockpit.engine.cluster import doctor
    from cockpit.errors import AccessDeniedError, NotFoundError

    kube = Kube.load(None, context, namespace)
    report = asyncio.run(doctor(kube, kube.namespace))
    print("\n".join(render_doctor(report)))
    if report.namespace_exists is False:
        _error(f"namespace '{kube.namespace}' not found in context '{kube.context}'")
        return NotFoundError.exit_code
    if report.missing:
        _error(missing_permissions_line(report.missing, kube.namespace))
        return AccessDeniedError.exit_code
    return 0


def _shell_command(args: argparse.Namespace) -> list[str]:
    """The command after ``--``; options written between SERVICE and ``--`` (which argparse
    leaves in the remainder) are read into ``args``."""
    rest = list(args.command)
    if "--" in rest:
        head, command = rest[: rest.index("--")], rest[rest.index("--") + 1 :]
    elif rest and not rest[0].startswith("-"):
        head, command = [], rest  # argparse already took the "--"
    else:
        head, command = rest, []
    options = argparse.ArgumentParser(prog="cockpit shell", add_help=False, exit_on_error=False)
    options.add_argument("-c", "--container")
    options.add_argument("--namespace")
    options.add_argument("--context")
    try:
        known, unknown = options.parse_known_args(head)
    except argparse.ArgumentError as exc:
        raise UsageError(f"shell: {exc}") from None
    if unknown:
        raise UsageError(f"shell: unknown option(s) {' '.join(unknown)} (put the command after --)")
    for name in ("container", "namespace", "context"):
        if getattr(known, name):
            setattr(args, name, getattr(known, name))
    return command


def cmd_shell(args: argparse.Namespace) -> int:
    context, namespace = _cluster_target(args)
    from cockpit.adapters.kube import DEFAULT_SHELL, Kube, run_shell, shell_target

    command = _shell_command(args)
    context, namespace = args.context or context, args.namespace or namespace
    kube = Kube.load(None, context, namespace)
    kube.require_namespace(kube.namespace)
    pod, container = shell_target(kube, kube.namespace, args.service, args.container)
    return run_shell(kube, kube.namespace, pod, container, command or DEFAULT_SHELL)


def _load_ui() -> Callable[..., int] | None:
    """``cockpit.ui.app.run_ui``, imported only when the UI is wanted (Textual is slow to load)."""
    try:
        module = importlib.import_module(UI_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name == UI_MODULE:
            return None
        raise
    run_ui: Callable[..., int] = module.run_ui
    return run_ui


def _stdin_fd() -> int | None:
    try:
        return sys.stdin.fileno() if sys.stdin is not None else None
    except (OSError, ValueError):
        return None


def _quiet_closed_stdout() -> None:
    """After `cockpit up --headless | head`, exit without a BrokenPipeError at shutdown."""
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def cmd_env(args: argparse.Namespace) -> int:
    from cockpit.adapters.configfile import kube_target, load_config

    config = load_config(args.config)
    target = kube_target(config)

    from cockpit.adapters.envsource import KubeEnvSource, write_private_file
    from cockpit.adapters.servicecatalog import KubeServiceCatalog, load_api_client
    from cockpit.engine.forwards import env_file

    api_client = load_api_client(target.context)
    text, env = asyncio.run(
        env_file(
            KubeEnvSource(api_client),
            KubeServiceCatalog(api_client),
            target.namespace,
            args.service,
            container=args.container,
        )
    )
    for note in env.notes:
        print(f"cockpit: note: {note}", file=sys.stderr)
    if args.output in (None, "-"):
        sys.stdout.write(text)
        return 0
    path = write_private_file(args.output, text)
    secret = sum(1 for v in env.vars if v.secret)
    print(
        f"cockpit: wrote {len(env.vars)} variables ({secret} from Secrets) to {path}",
        file=sys.stderr,
    )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from cockpit.adapters.configfile import load_config
    from cockpit.core.config import ConfigValidationError

    try:
        config = load_config(args.config)
    except ConfigValidationError as exc:
        for problem in exc.problems:
            _error(problem)
        return exc.exit_code
    local = [name for name, service in config.services.items() if service.command]
    namespace = config.namespace or "the current context's"
    print(
        f"{config.filename}: ok; services: {', '.join(config.services)}; "
        f"can run locally: {', '.join(local) or 'none (no service has a command)'}; "
        f"namespace: {namespace}"
    )
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from cockpit.core.config import config_json_schema

    print(json.dumps(config_json_schema(), indent=2))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from cockpit.adapters.configfile import write_config
    from cockpit.core.config import CONFIG_FILENAME, parse_config, starter_config

    service = args.service or _service_name_from(Path.cwd().name)
    if args.from_cluster:
        args.namespace, found_port, others = _services_from_cluster(
            service, args.context, args.namespace
        )
        args.port = args.port or found_port
        args.remote = sorted({*args.remote, *others})
    for name in (service, *args.remote):
        if not _SERVICE_NAME.match(name):
            raise UsageError(
                f"{name!r} is not a Kubernetes service name",
                hint="lowercase letters, digits and '-', starting with a letter",
            )
    text = starter_config(
        service,
        command=args.command,
        port=args.port,
        remote=args.remote,
        namespace=args.namespace,
        context=args.context,
    )
    path = Path(args.config or CONFIG_FILENAME)
    parse_config(text, str(path))  # what we write must load
    write_config(path, text, force=args.force)
    local = f"{service} runs `{args.command}`" if args.command else f"add {service}'s command"
    print(f"wrote {path}: {local}; check it with `cockpit validate`")
    return 0


def _services_from_cluster(
    service: str, context: str | None, namespace: str | None
) -> tuple[str, int | None, list[str]]:
    """(namespace, SERVICE's container port, every other service) from the cluster."""
    from cockpit.adapters.kube import Kube
    from cockpit.adapters.servicecatalog import KubeServiceCatalog, load_api_client

    kube = Kube.load(None, context, namespace)
    ns = namespace or kube.namespace
    try:
        kube.require_namespace(ns)  # a mistyped namespace is named as such, not as the service
    finally:
        kube.close()
    catalog = KubeServiceCatalog(load_api_client(context))
    spec = asyncio.run(catalog.get(ns, service))  # NotFoundError: one line
    others = [s.name for s in asyncio.run(catalog.list(ns)) if s.name != service]
    targets = [p.target_port for p in spec.ports if isinstance(p.target_port, int)]
    port = targets[0] if targets else asyncio.run(catalog.container_port(spec))
    if port is None and spec.ports:  # a named targetPort and no ready pod to resolve it
        port = spec.ports[0].port
    return ns, port, others


def _service_name_from(directory: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", directory.lower()).strip("-")
    name = name.lstrip("0123456789-")[:63].rstrip("-")
    return name or "app"
