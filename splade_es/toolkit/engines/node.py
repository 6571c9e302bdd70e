"""A real OpenSearch / Elasticsearch node, or cluster of nodes, on this machine, built from Maven Central.

No Docker and no vendor download site: both projects publish an "integ-test" zip (a
real node with the transport modules) as a Maven artifact. OpenSearch's ``rank_features``
lives in the mapper-extras module, which Maven Central carries as a client jar; we
install it as a module. The assembled distribution is cached; each node gets its own
config, data (per version) and log directories, so the distribution is never written to.

A cluster of N nodes runs on 127.0.0.1 from the same distribution: each node has its own
directories, HTTP and transport ports, the others' transport ports as discovery seeds, and
(on a fresh cluster) the list of nodes that bootstrap the first election.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from splade_es.errors import SpladeError

KINDS = ("opensearch", "elasticsearch")
DEFAULT_VERSIONS = {"opensearch": "2.19.6", "elasticsearch": "8.19.9"}
DEFAULT_PORTS = {"opensearch": 9200, "elasticsearch": 9201}
DEFAULT_HEAP = "512m"
_ENV_PREFIX = {"opensearch": "OPENSEARCH", "elasticsearch": "ES"}
# The setting naming the nodes of a new cluster's first election (OpenSearch 2+ renamed "master").
_INITIAL_MANAGERS = {"opensearch": "cluster.initial_cluster_manager_nodes",
                     "elasticsearch": "cluster.initial_master_nodes"}
_UNPRIVILEGED_USER = "nobody"
_RECIPE = "2"  # bump when assembly changes, so cached distributions are rebuilt
# OpenSearch modules the integ-test zip lacks: (Maven artifact, plugin class pattern inside the jar).
_OPENSEARCH_MODULES = {
    "mapper-extras": ("mapper-extras-client", r"org/opensearch/index/mapper/MapperExtras\w*Plugin\.class"),
    "analysis-common": ("analysis-common", r"org/opensearch/analysis/common/Common\w*Plugin\.class"),
}


class NodeError(SpladeError):
    """A local node could not be assembled, started or stopped."""


@dataclass
class Member:
    """One node of a local cluster: its name, process and ports."""

    name: str
    pid: int
    http_port: int
    transport_port: int | None  # None in a state file written before clusters
    logs: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def alive(self) -> bool:
        return _alive(self.pid)


@dataclass
class NodeState:
    """What ``start`` records so that ``status`` and ``stop`` find the nodes again.

    ``port``, ``pid``, ``url`` and ``logs`` are the first node's, as in single-node state files,
    which lack ``nodes`` and still load.
    """

    kind: str
    version: str
    port: int
    pid: int
    url: str
    home: str
    logs: str
    nodes: list[Member] = field(default_factory=list)

    def members(self) -> list[Member]:
        """Every node; a single-node state file without ``nodes`` describes one."""
        return self.nodes or [Member("node-0", self.pid, self.port, None, self.logs)]

    def alive(self) -> bool:
        return any(member.alive for member in self.members())

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> NodeState | None:
        try:
            fields = json.loads(path.read_text())
            nodes = [Member(**member) for member in fields.pop("nodes", [])]
            return cls(**fields, nodes=nodes)
        except (OSError, ValueError, TypeError, AttributeError):
            return None


def engines_root() -> Path:
    """Cache of distributions and node directories.

    ``SPLADE_ES_ENGINE_DIR`` wins. Engines refuse to run as root, so as root the node runs
    as ``nobody`` and everything it reads must sit outside root's private home.
    """
    configured = os.environ.get("SPLADE_ES_ENGINE_DIR")
    if configured:
        return Path(configured).expanduser()
    if os.geteuid() == 0:
        return Path("/var/cache/splade-es/engines")
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("splade-es")) / "engines"


def minimum_java(kind: str, version: str) -> int:
    major = int(version.split(".")[0])
    if kind == "opensearch":
        return 21 if major >= 3 else 11
    return 21 if major >= 9 else 17


class LocalNode:
    """One node, or one cluster, per engine kind under :func:`engines_root`: ``start``, ``stop``, ``status``."""

    def __init__(self, kind: str, version: str | None = None, root: Path | None = None, log=None,
                 node_dir: Path | None = None) -> None:
        """``node_dir`` puts the nodes elsewhere while sharing the cached distribution (a test's own cluster)."""
        if kind not in KINDS:
            raise NodeError(f"unknown engine kind {kind!r}: choose {' or '.join(KINDS)}")
        self.kind = kind
        self.version = version or DEFAULT_VERSIONS[kind]
        self.root = root or engines_root()
        self.node_dir = node_dir or self.root / "nodes" / kind
        self.state_file = self.node_dir / "node.json"
        self.build_log = self.root / "build.log"
        self._log = log or (lambda message: None)

    # ------------------------------------------------------------ distribution
    @property
    def dist_dir(self) -> Path:
        return self.root / "dist" / f"{self.kind}-{self.version}"

    def assemble(self) -> Path:
        """Download (Maven) and unpack the distribution once; later calls reuse it."""
        marker = self.dist_dir / ".assembled"
        if marker.is_file() and marker.read_text().split() == [self.version, _RECIPE]:
            return self.dist_dir
        self.root.mkdir(parents=True, exist_ok=True)
        downloads = self.root / "downloads"
        group = f"org.{self.kind}.distribution.integ-test-zip"
        archive = self._maven_fetch(f"{group}:{self.kind}:{self.version}:zip", downloads)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.kind}-", dir=self.root))
        try:
            home = _unzip_single_root(archive, staging)
            if self.kind == "opensearch":
                for module, (artifact, plugin_class) in _OPENSEARCH_MODULES.items():
                    jar = self._maven_fetch(f"org.opensearch.plugin:{artifact}:{self.version}:jar", downloads)
                    _install_module(home / "modules" / module, jar, plugin_class, self.version,
                                    minimum_java(self.kind, self.version))
            (home / ".assembled").write_text(f"{self.version} {_RECIPE}\n")
            self.dist_dir.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.dist_dir, ignore_errors=True)
            home.rename(self.dist_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.dist_dir

    def _maven_fetch(self, artifact: str, directory: Path) -> Path:
        _, name, version, packaging = artifact.split(":")
        target = directory / f"{name}-{version}.{packaging}"
        if target.is_file():
            return target
        mvn = shutil.which("mvn")
        if mvn is None:
            raise NodeError("Maven ('mvn') is not on PATH: it fetches the engine from Maven Central")
        self._log(f"fetching {artifact} with Maven (log: {self.build_log})")
        directory.mkdir(parents=True, exist_ok=True)
        with self.build_log.open("a") as log:
            done = subprocess.run(
                [mvn, "-B", "-q", "dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={directory}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False,
            )
        if done.returncode != 0 or not target.is_file():
            raise NodeError(f"Maven could not fetch {artifact} (is {self.kind} {self.version} published?); see {self.build_log}")
        return target

    # ------------------------------------------------------------ lifecycle
    def status(self) -> NodeState | None:
        """The running cluster's state (some node alive), or None when none is running."""
        state = NodeState.load(self.state_file)
        if state is None or not state.alive():
            return None
        return state

    @property
    def cluster_name(self) -> str:
        """Distinct per node directory, so no node of another cluster on this machine can join this one."""
        return f"splade-es-{self.kind}-{hashlib.sha1(str(self.node_dir.resolve()).encode()).hexdigest()[:8]}"

    def member_dirs(self, nodes: int) -> list[Path]:
        """A single node keeps today's directory; the nodes of a cluster each get one below it."""
        return [self.node_dir] if nodes == 1 else [self.node_dir / f"node-{i}" for i in range(nodes)]

    def start(self, port: int | None = None, heap: str = DEFAULT_HEAP, fresh: bool = False,
              timeout: float = 180.0, nodes: int = 1) -> NodeState:
        """Start ``nodes`` nodes (or return the running ones) and wait until all joined a yellow cluster.

        With ``port`` P the HTTP ports are P..P+nodes-1; 0 (and, for a cluster, no port) picks free ones.
        If one node fails, the others are stopped and the error names its logs.
        """
        if nodes < 1:
            raise NodeError(f"--nodes must be at least 1, not {nodes}")
        running = self.status()
        if running is not None:
            if (running.version != self.version or port not in (None, 0, running.port)
                    or len(running.members()) != nodes):
                raise NodeError(f"{self.kind} {running.version} ({len(running.members())} node(s)) already runs at "
                                f"{running.url}: stop it first")
            return running
        home = self.assemble()
        java_home = find_java_home(minimum_java(self.kind, self.version))
        http_ports = _http_ports(self.kind, port, nodes)
        transport_ports = _free_ports(nodes, exclude=set(http_ports))
        names = [f"node-{i}" for i in range(nodes)]
        directories = self.member_dirs(nodes)
        prepared = [self._prepare_node_dir(home, heap, fresh, directory) for directory in directories]
        bootstrap = nodes > 1 and not any(any(data.iterdir()) for _, data, _ in prepared)
        launches = []
        for i, (directory, (config, data, logs)) in enumerate(zip(directories, prepared)):
            settings: dict[str, object] = {
                "node.name": names[i], "network.host": "127.0.0.1", "http.port": http_ports[i],
                "transport.port": transport_ports[i], "path.data": data, "path.logs": logs,
                "cluster.routing.allocation.disk.threshold_enabled": "false",
            }
            if nodes == 1:
                settings["discovery.type"] = "single-node"
            else:
                settings["cluster.name"] = self.cluster_name
                settings["discovery.seed_hosts"] = ",".join(f"127.0.0.1:{p}" for j, p in enumerate(transport_ports)
                                                            if j != i)
                if bootstrap:  # only a cluster that has never formed may bootstrap (else: a split brain)
                    settings[_INITIAL_MANAGERS[self.kind]] = ",".join(names)
            if self.kind == "elasticsearch":
                settings["xpack.security.enabled"] = "false"
            self._log(f"starting {self.kind} {self.version} {names[i]} on 127.0.0.1:{http_ports[i]} (logs: {logs})")
            launches.append(self._launch(home, java_home, heap, directory, config, logs, settings))
        members = []
        failed = None
        for name, directory, (_, _, logs), launch, http_port, transport_port in zip(
                names, directories, prepared, launches, http_ports, transport_ports):
            if launch.wait() != 0:
                failed = failed or NodeError(f"{self.kind} {name} failed to start (exit {launch.returncode}); "
                                             f"see {logs}/startup.log and {logs}")
                continue
            members.append(Member(name, _read_pid(directory / "node.pid"), http_port, transport_port, str(logs)))
        first = members[0] if members else Member(names[0], 0, http_ports[0], transport_ports[0], str(prepared[0][2]))
        state = NodeState(self.kind, self.version, first.http_port, first.pid, first.url, str(home), first.logs,
                          members)
        state.save(self.state_file)
        try:
            if failed:
                raise failed
            _wait_healthy(members, timeout)
        except NodeError:
            self.stop()
            raise
        return state

    def _launch(self, home: Path, java_home: Path, heap: str, directory: Path, config: Path, logs: Path,
                settings: dict[str, object]) -> subprocess.Popen:
        """Run the engine's launcher in the background (the nodes of a cluster start together: each
        waits for the others to form the cluster)."""
        pid_file = directory / "node.pid"
        pid_file.unlink(missing_ok=True)
        prefix = _ENV_PREFIX[self.kind]
        env = {**os.environ, f"{prefix}_PATH_CONF": str(config), f"{prefix}_JAVA_HOME": str(java_home),
               f"{prefix}_JAVA_OPTS": f"-Xms{heap} -Xmx{heap}"}
        env.pop("JAVA_TOOL_OPTIONS", None)
        command = [str(home / "bin" / self.kind), "-d", "-p", str(pid_file)]
        command += [f"-E{key}={value}" for key, value in settings.items()]
        with (logs / "startup.log").open("a") as startup:
            return subprocess.Popen(command, cwd=directory, env=env, stdout=startup, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, **_drop_root())

    def stop(self, timeout: float = 60.0) -> NodeState | None:
        """Stop every node cleanly (SIGTERM, then SIGKILL after ``timeout``); their logs stay."""
        state = NodeState.load(self.state_file)
        if state is None:
            return None
        members = [member for member in state.members() if member.alive]
        for member in members:
            os.kill(member.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(member.alive for member in members) and time.monotonic() < deadline:
            time.sleep(0.2)
        for member in members:
            if member.alive:
                os.kill(member.pid, signal.SIGKILL)
        self.state_file.unlink(missing_ok=True)
        return state

    def _prepare_node_dir(self, home: Path, heap: str, fresh: bool,
                          directory: Path | None = None) -> tuple[Path, Path, Path]:
        # Data per version: a newer engine rewrites it in a format an older one refuses to start on.
        directory = directory or self.node_dir
        config, data, logs = (directory / name for name in ("config", f"data-{self.version}", "logs"))
        if fresh:
            shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(config, ignore_errors=True)
        shutil.copytree(home / "config", config)
        (config / f"{self.kind}.keystore").unlink(missing_ok=True)
        options = config / "jvm.options"
        options.write_text(_absolute_jvm_paths(options.read_text(), logs, data))
        data.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam(_UNPRIVILEGED_USER)
            for path in [directory, *directory.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
        return config, data, logs


# ---------------------------------------------------------------- helpers
def find_java_home(minimum: int) -> Path:
    """The first Java >= ``minimum`` among SPLADE_ES_JAVA_HOME, JAVA_HOME, PATH and /usr/lib/jvm."""
    candidates: list[Path] = []
    for variable in ("SPLADE_ES_JAVA_HOME", "JAVA_HOME"):
        if os.environ.get(variable):
            candidates.append(Path(os.environ[variable]))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent.parent)
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        candidates += sorted(p for p in jvm.iterdir() if (p / "bin" / "java").is_file())
    seen = []
    for home in candidates:
        version = _java_major(home)
        seen.append(f"{home} ({version or '?'})")
        if version and version >= minimum:
            return home
    raise NodeError(f"this engine needs Java {minimum}+; found: {', '.join(seen) or 'none'} (set SPLADE_ES_JAVA_HOME)")


def _java_major(home: Path) -> int | None:
    release = home / "release"
    text = release.read_text(errors="replace") if release.is_file() else ""
    match = re.search(r'JAVA_VERSION="(\d+)(?:\.(\d+))?', text)
    if match is None:
        java = home / "bin" / "java"
        if not java.is_file():
            return None
        done = subprocess.run([str(java), "-version"], capture_output=True, text=True, check=False)
        match = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr)
        if match is None:
            return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major


def _unzip_single_root(archive: Path, target: Path) -> Path:
    """Extract keeping Unix modes (zipfile drops them), return the single top directory."""
    with zipfile.ZipFile(archive) as bundle:
        for info in bundle.infolist():
            path = Path(bundle.extract(info, target))
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                path.chmod(mode | 0o444 | (0o111 if path.is_dir() else 0))
    tops = [p for p in target.iterdir() if p.is_dir()]
    if len(tops) != 1:
        raise NodeError(f"{archive}: expected one top directory, found {len(tops)}")
    return tops[0]


def _install_module(directory: Path, jar: Path, plugin_class: str, version: str, java: int) -> None:
    """Make a published module jar a module; its plugin class is read from the jar, not assumed."""
    with zipfile.ZipFile(jar) as archive:
        classes = [n for n in archive.namelist() if re.fullmatch(plugin_class, n)]
    if not classes:
        raise NodeError(f"{jar}: no plugin class matching {plugin_class} inside")
    directory.mkdir(parents=True)
    shutil.copy2(jar, directory / jar.name)
    descriptor = {
        "name": directory.name, "description": f"{directory.name} (from {jar.name})",
        "version": version, "opensearch.version": version, "java.version": str(java),
        "classname": classes[0].removesuffix(".class").replace("/", "."),
    }
    (directory / "plugin-descriptor.properties").write_text("".join(f"{k}={v}\n" for k, v in descriptor.items()))


def _absolute_jvm_paths(options: str, logs: Path, data: Path) -> str:
    """jvm.options names gc/error logs relative to the working directory; pin them to ours."""
    def pin(match: re.Match) -> str:
        key, value = match.group(1), match.group(2)
        if value.startswith(("/", "${")):
            return match.group(0)
        return f"{key}{data}" if key == "HeapDumpPath=" else f"{key}{logs / Path(value).name}"

    return re.sub(r"(file=|ErrorFile=|HeapDumpPath=|-Xloggc:)([^\s:,]+)", pin, options)


def _drop_root() -> dict:
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam(_UNPRIVILEGED_USER)
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _read_pid(pid_file: Path, wait: float = 30.0) -> int:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            return int(pid_file.read_text().strip())
        except (OSError, ValueError):
            time.sleep(0.2)
    raise NodeError(f"the node wrote no pid file ({pid_file})")


def _wait_healthy(members: list[Member], timeout: float) -> None:
    """Until the cluster is yellow or green with every node in it; a node that exits ends the wait."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    query = f"wait_for_status=yellow&wait_for_nodes={len(members)}&timeout=2s"
    while time.monotonic() < deadline:
        for member in members:
            if not member.alive:
                raise NodeError(f"{member.name} exited while starting ({last}); see its logs in {member.logs}")
        for member in members:
            try:
                with urllib.request.urlopen(f"{member.url}/_cluster/health?{query}", timeout=5) as reply:
                    health = json.load(reply)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last = f"{member.name}: {exc}"
                continue
            if health.get("status") in ("yellow", "green") and health.get("number_of_nodes") == len(members):
                return
            last = f"status {health.get('status')}, {health.get('number_of_nodes')}/{len(members)} nodes"
            break
        time.sleep(0.5)
    where = ", ".join(member.url for member in members)
    raise NodeError(f"the cluster at {where} was not healthy after {timeout:.0f}s ({last}); "
                    f"see the logs in {members[0].logs}")


def _alive(pid: int) -> bool:
    if pid <= 0:  # no process recorded (0 would address our own process group)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _free_ports(count: int, exclude: set[int] = frozenset()) -> list[int]:
    """``count`` distinct free ports (the system may hand out a just-closed one again)."""
    ports: list[int] = []
    while len(ports) < count:
        port = _free_port()
        if port not in ports and port not in exclude:
            ports.append(port)
    return ports


def _http_ports(kind: str, port: int | None, nodes: int) -> list[int]:
    """One node: ``port`` or the kind's default; a cluster: ``port`` and the next ones; 0 (or a cluster
    without a port): free ports."""
    if port is None and nodes == 1:
        port = DEFAULT_PORTS[kind]
    if not port:
        return _free_ports(nodes)
    ports = list(range(port, port + nodes))
    taken = [p for p in ports if p > 65535 or not _port_free(p)]
    if taken:
        raise NodeError(f"port {taken[0]} on 127.0.0.1 is taken: pick another with --port (0 = any free port)")
    return ports


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
