"""A real single-node OpenSearch / Elasticsearch on this machine, built from Maven Central.

No Docker and no vendor download site: both projects publish an "integ-test" zip (a
real node with the transport modules) as a Maven artifact. OpenSearch's ``rank_features``
lives in the mapper-extras module, which Maven Central carries as a client jar; we
install it as a module. The assembled distribution is cached; each node gets its own
config, data (per version) and log directories, so the distribution is never written to.
"""

from __future__ import annotations

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
from dataclasses import asdict, dataclass
from pathlib import Path

from splade_es.errors import SpladeError

KINDS = ("opensearch", "elasticsearch")
DEFAULT_VERSIONS = {"opensearch": "2.19.6", "elasticsearch": "8.19.9"}
DEFAULT_PORTS = {"opensearch": 9200, "elasticsearch": 9201}
DEFAULT_HEAP = "512m"
_ENV_PREFIX = {"opensearch": "OPENSEARCH", "elasticsearch": "ES"}
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
class NodeState:
    """What ``start`` records so that ``status`` and ``stop`` find the node again."""

    kind: str
    version: str
    port: int
    pid: int
    url: str
    home: str
    logs: str

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> NodeState | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
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
    """One node per engine kind under :func:`engines_root`: ``start``, ``stop``, ``status``."""

    def __init__(self, kind: str, version: str | None = None, root: Path | None = None, log=None) -> None:
        if kind not in KINDS:
            raise NodeError(f"unknown engine kind {kind!r}: choose {' or '.join(KINDS)}")
        self.kind = kind
        self.version = version or DEFAULT_VERSIONS[kind]
        self.root = root or engines_root()
        self.node_dir = self.root / "nodes" / kind
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
        """The running node's state, or None when none is running."""
        state = NodeState.load(self.state_file)
        if state is None or not _alive(state.pid):
            return None
        return state

    def start(self, port: int | None = None, heap: str = DEFAULT_HEAP, fresh: bool = False,
              timeout: float = 180.0) -> NodeState:
        """Start the node (or return the running one) and wait until the cluster is yellow."""
        running = self.status()
        if running is not None:
            if running.version != self.version or (port not in (None, 0, running.port)):
                raise NodeError(f"{self.kind} {running.version} already runs at {running.url}: stop it first")
            return running
        home = self.assemble()
        java_home = find_java_home(minimum_java(self.kind, self.version))
        port = DEFAULT_PORTS[self.kind] if port is None else port
        port = port or _free_port()
        if not _port_free(port):
            raise NodeError(f"port {port} on 127.0.0.1 is taken: pick another with --port (0 = any free port)")
        transport = _free_port()
        config, data, logs = self._prepare_node_dir(home, heap, fresh)
        pid_file = self.node_dir / "node.pid"
        pid_file.unlink(missing_ok=True)
        prefix = _ENV_PREFIX[self.kind]
        env = {**os.environ, f"{prefix}_PATH_CONF": str(config), f"{prefix}_JAVA_HOME": str(java_home),
               f"{prefix}_JAVA_OPTS": f"-Xms{heap} -Xmx{heap}"}
        env.pop("JAVA_TOOL_OPTIONS", None)
        settings = {
            "discovery.type": "single-node", "network.host": "127.0.0.1", "http.port": port,
            "transport.port": transport, "path.data": data, "path.logs": logs,
            "cluster.routing.allocation.disk.threshold_enabled": "false",
        }
        if self.kind == "elasticsearch":
            settings["xpack.security.enabled"] = "false"
        command = [str(home / "bin" / self.kind), "-d", "-p", str(pid_file)]
        command += [f"-E{key}={value}" for key, value in settings.items()]
        self._log(f"starting {self.kind} {self.version} on 127.0.0.1:{port} (logs: {logs})")
        with (logs / "startup.log").open("a") as startup:
            launched = subprocess.run(command, cwd=self.node_dir, env=env, stdout=startup, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, check=False, **_drop_root())
        if launched.returncode != 0:
            raise NodeError(f"{self.kind} failed to start (exit {launched.returncode}); see {logs}/startup.log and {logs}")
        pid = _read_pid(pid_file)
        url = f"http://127.0.0.1:{port}"
        state = NodeState(self.kind, self.version, port, pid, url, str(home), str(logs))
        state.save(self.state_file)
        try:
            _wait_healthy(url, pid, timeout)
        except NodeError:
            self.stop()
            raise
        return state

    def stop(self, timeout: float = 60.0) -> NodeState | None:
        """Stop the node cleanly (SIGTERM, then SIGKILL after ``timeout``); its logs stay."""
        state = NodeState.load(self.state_file)
        if state is None:
            return None
        if _alive(state.pid):
            os.kill(state.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(state.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(state.pid):
                os.kill(state.pid, signal.SIGKILL)
        self.state_file.unlink(missing_ok=True)
        return state

    def _prepare_node_dir(self, home: Path, heap: str, fresh: bool) -> tuple[Path, Path, Path]:
        # Data per version: a newer engine rewrites it in a format an older one refuses to start on.
        config, data, logs = (self.node_dir / name for name in ("config", f"data-{self.version}", "logs"))
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
            for path in [self.node_dir, *self.node_dir.rglob("*")]:
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


def _wait_healthy(url: str, pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not _alive(pid):
            raise NodeError(f"the node exited while starting ({last}); see its logs")
        try:
            with urllib.request.urlopen(f"{url}/_cluster/health?wait_for_status=yellow&timeout=2s", timeout=5) as reply:
                if json.load(reply).get("status") in ("yellow", "green"):
                    return
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise NodeError(f"the node at {url} was not healthy after {timeout:.0f}s ({last})")


def _alive(pid: int) -> bool:
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


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
