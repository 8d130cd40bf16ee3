"""`python -m local.stack` (`make run`): the whole of DeepSkin on one machine, wired the way it is in the cloud.

Emulators (Firestore, Pub/Sub, Cloud Storage) + each function as its own functions-framework process + the
web page as static files + local/bridge.py standing in for Eventarc (and for Pub/Sub's dead lettering) + a
timer standing in for Cloud Scheduler, which ticks the sweeper. Ctrl-C or SIGTERM stops all of it:
every child runs in its own process group, which is killed as a whole, so no orphan keeps a port. Even a
SIGKILL, which runs no clean-up here, leaves none: local/watchdog.py kills those groups once this process is gone.

Ports are fixed by default (the web page and the CLI assume them); `--free-ports` or `--port NAME=N` moves
them, e.g. for tests that must not collide with a running `make run`.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from deepskin.services.config import settings
from local.bridge import Bridge, pubsub_route, storage_route
from local.emulators import DEFAULT_PROJECT, HOST, Emulator, EmulatorError, Emulators, create_resources, launch

REPO = Path(__file__).resolve().parent.parent
FUNCTIONS_FRAMEWORK = Path(sys.executable).parent / "functions-framework"
READY_TIMEOUT_S = 90.0  # a function imports onnxruntime and the Google clients: seconds on a busy machine
READY_MARKER = "DeepSkin stack ready"
READY_END = "Ctrl-C stops everything."  # the last line of the ready report


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class Ports:
    web: int = 8080
    predict: int = 8081
    feedback: int = 8082
    retrain: int = 8083
    upload_event: int = 8084
    ops: int = 8085
    firestore: int = 8086
    pubsub: int = 8087
    storage: int = 8088
    upload_dead: int = 8089
    sweeper: int = 8090

    @classmethod
    def free(cls) -> Ports:
        """Distinct free loopback ports: all sockets are held open until every port is picked."""
        sockets = [socket.socket() for _ in fields(cls)]
        try:
            for sock in sockets:
                sock.bind((HOST, 0))
            return cls(*(sock.getsockname()[1] for sock in sockets))
        finally:
            for sock in sockets:
                sock.close()

    def check_free(self) -> None:
        """Fail before starting anything, naming the busy port, rather than deep inside an emulator's log."""
        for name, port in asdict(self).items():
            with socket.socket() as sock:
                # As the servers themselves bind: a port in TIME_WAIT after a previous run is not busy.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((HOST, port))
                except OSError as exc:
                    raise StackError(f"port {port} ({name}) is busy ({exc.strerror}): is another `make run` "
                                     f"running? Stop it, or move this one with --port {name}=N or "
                                     f"--free-ports.") from None


@dataclass(frozen=True)
class FunctionSpec:
    folder: str  # functions/<folder>/main.py
    target: str
    signature: str  # functions-framework --signature-type
    port: str  # the Ports field it listens on


FUNCTIONS = (
    FunctionSpec("predict", "predict_http", "http", "predict"),
    FunctionSpec("predict", "on_upload", "cloudevent", "upload_event"),
    FunctionSpec("predict", "on_upload_dead", "cloudevent", "upload_dead"),
    FunctionSpec("feedback", "feedback_http", "http", "feedback"),
    FunctionSpec("retrain_trigger", "on_feedback", "cloudevent", "retrain"),
    FunctionSpec("ops", "ops_http", "http", "ops"),
    FunctionSpec("sweeper", "on_sweep", "cloudevent", "sweeper"),
)


class FunctionProcess(Emulator):
    """A functions-framework process; up once it answers HTTP at all (a GET to an event function is a 4xx)."""

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StackError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if answers(self.ready_url):
                return
            time.sleep(0.2)
        raise StackError(f"{self.name} not ready at {self.ready_url} in {READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}")


def answers(url: str, timeout: float = 2.0) -> bool:
    """True when something serves HTTP at `url`, whatever the status code."""
    try:
        urllib.request.urlopen(url, timeout=timeout).close()  # a loopback URL  # nosec B310
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False
    return True


def page_headers(config: dict[str, str]) -> dict[str, str]:
    """The security headers of everything served from web/. The pages run only their own files (no inline
    script or style), show images from themselves, data: URLs (the heatmap) and blob: URLs (the photo's
    preview, the operator's plots), talk only to themselves and to the functions their /config.json names, and
    may not be framed (clickjacking). A referrer would carry the page's URL to the functions; the camera is the
    photo input's."""
    functions = sorted({"://".join(urlsplit(url)[:2]) for url in config.values()})  # their origins
    policy = ["default-src 'self'", "img-src 'self' data: blob:", f"connect-src 'self' {' '.join(functions)}",
              "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'"]
    return {"Content-Security-Policy": "; ".join(policy), "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "Permissions-Policy": "camera=(self), microphone=(), geolocation=()"}


class WebHandler(SimpleHTTPRequestHandler):
    """Static files from web/ (the user page, index.html, and the operator page, ops.html), plus /config.json
    telling the pages where the functions are; every answer with `page_headers`."""

    def __init__(self, *args, config: dict[str, str], **kwargs):
        self.config = config
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:  # pylint: disable=invalid-name
        if self.path.split("?")[0] != "/config.json":
            super().do_GET()
            return
        body = json.dumps(self.config).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def end_headers(self) -> None:
        for name, value in page_headers(self.config).items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:  # pylint: disable=redefined-builtin
        pass  # one line per static file drowns the stack's own output


def web_server(web_dir: Path, port: int, config: dict[str, str]) -> ThreadingHTTPServer:
    """web/ on `port` of the loopback interface (0: any free port), serving in a thread of its own."""
    server = ThreadingHTTPServer((HOST, port), functools.partial(WebHandler, directory=str(web_dir), config=config))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="web", daemon=True).start()
    return server


@dataclass
class Component:
    name: str
    url: str
    state: str  # up, down, or skipped (its folder does not exist)


class Stack:
    def __init__(self, ports: Ports = Ports(), web_dir: Path = REPO / "web", project: str = DEFAULT_PROJECT):
        self.ports = ports
        self.web_dir = web_dir
        self.project = project
        self.logs = Path(tempfile.mkdtemp(prefix="deepskin-stack-"))
        self.emulators: Emulators | None = None
        self.functions: dict[str, FunctionProcess] = {}
        self.web: ThreadingHTTPServer | None = None
        self.bridge: Bridge | None = None
        self.sweep_timer: SweepTimer | None = None
        self.notes: list[str] = []
        self.start_seconds = 0.0

    def url(self, port_name: str) -> str:
        return f"http://{HOST}:{getattr(self.ports, port_name)}"

    def start(self) -> Self:
        started = time.monotonic()
        try:
            self.ports.check_free()
            self.emulators = Emulators.start(self.project, self.ports.firestore, self.ports.pubsub,
                                             self.ports.storage)
            os.environ.update(self.emulators.env)  # create_resources and the bridge's client read them
            create_resources()
            self.start_functions()
            self.start_web()
            self.start_bridge()
            self.start_sweep_timer()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def function_env(self) -> dict[str, str]:
        web_origins = f"http://{HOST}:{self.ports.web},http://localhost:{self.ports.web}"
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            # The page's origin moves with its port; an explicit setting wins.
            "DEEPSKIN_ALLOWED_ORIGINS": os.environ.get("DEEPSKIN_ALLOWED_ORIGINS", web_origins),
            "PYTHONUNBUFFERED": "1",
        }

    def start_functions(self) -> None:
        env = self.function_env()
        for spec in FUNCTIONS:
            source = REPO / "functions" / spec.folder / "main.py"
            if not source.exists():
                self.notes.append(f"{spec.target}: skipped, {source.relative_to(REPO)} does not exist yet")
                continue
            port = getattr(self.ports, spec.port)
            args = [str(FUNCTIONS_FRAMEWORK), "--target", spec.target, "--source", str(source), "--host", HOST,
                    "--port", str(port), "--signature-type", spec.signature]
            launched = launch(spec.target, args, self.url(spec.port) + "/", self.logs, env)
            self.functions[spec.target] = FunctionProcess(**vars(launched))
        # Started together, then awaited: their imports overlap instead of adding up.
        deadline = time.monotonic() + READY_TIMEOUT_S
        for function in self.functions.values():
            function.wait_ready(deadline)

    def start_web(self) -> None:
        if not (self.web_dir / "index.html").exists():
            self.notes.append(f"web: skipped, {self.web_dir}/index.html does not exist yet")
            return
        config = {"predict_url": self.url("predict"), "feedback_url": self.url("feedback"), "ops_url": self.url("ops")}
        self.web = web_server(self.web_dir, self.ports.web, config)

    def start_bridge(self) -> None:
        config = settings()
        routes = [storage_route("uploads-predict", self.url("upload_event"), config.project,
                                self.url("upload_dead"))]
        if "on_feedback" in self.functions:
            routes.append(pubsub_route(config.project, config.feedback_topic, "feedback-retrain", self.url("retrain")))
        self.bridge = Bridge(config.project, routes).start()

    def start_sweep_timer(self) -> None:
        if "on_sweep" in self.functions:
            self.sweep_timer = SweepTimer(self.url("sweeper")).start()

    def components(self) -> list[Component]:
        """Each part and whether it answers now."""
        def probe(started: bool, url: str) -> str:
            return "skipped" if not started else "up" if answers(url) else "down"

        listed = [Component("web", self.url("web") + "/", probe(self.web is not None, self.url("web") + "/"))]
        listed += [Component(spec.target, self.url(spec.port) + "/",
                             probe(spec.target in self.functions, self.url(spec.port) + "/")) for spec in FUNCTIONS]
        routes = ", ".join(f"{route.subscription} -> {route.url}" for route in self.bridge.routes) if self.bridge else ""
        listed.append(Component("bridge", routes, "up" if self.bridge and self.bridge.alive() else "down"))
        for name, probe_path in (("firestore", "/"), ("pubsub", "/"), ("storage", "/storage/v1/b")):
            url = self.url(name)
            listed.append(Component(f"{name} emulator", url, probe(self.emulators is not None, url + probe_path)))
        return listed

    def report(self) -> str:
        lines = [f"{READY_MARKER} in {self.start_seconds:.1f} s (logs: {self.logs})"]
        lines += [f"  {c.name:<18} {c.state:<7}  {c.url}" for c in self.components()]
        lines += [f"  note: {note}" for note in self.notes]
        lines.append(f"Operator page (a clinician key opens it): {self.url('web')}/ops.html")
        lines.append("For the CLI and tests in another shell:")
        env = {**(self.emulators.env if self.emulators else {}), "DEEPSKIN_PREDICT_URL": self.url("predict"),
               "DEEPSKIN_FEEDBACK_URL": self.url("feedback"), "DEEPSKIN_OPS_URL": self.url("ops"),
               "DEEPSKIN_WEB_URL": self.url("web")}
        lines += [f"  export {name}={value}" for name, value in env.items()]
        lines.append(READY_END)
        return "\n".join(lines)

    def stop(self) -> None:
        """Reverse order: stop pulling events before their functions go, and the functions before the emulators."""
        if self.sweep_timer is not None:
            self.sweep_timer.stop()
            self.sweep_timer = None
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge = None
        if self.web is not None:
            self.web.shutdown()
            self.web.server_close()
            self.web = None
        stop_together(list(self.functions.values()))
        self.functions.clear()
        if self.emulators is not None:
            stop_together(self.emulators.running)  # the Java emulators take ~2 s each to exit
            self.emulators.stop()  # now only removes its work directory
            self.emulators = None
        shutil.rmtree(self.logs, ignore_errors=True)  # a failed start already quoted the log's tail

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SweepTimer:
    """Cloud Scheduler's stand-in: every $DEEPSKIN_SWEEP_SECONDS (default 60) a tick event to the sweeper."""

    def __init__(self, url: str):
        self.url = url
        self.interval = float(os.environ.get("DEEPSKIN_SWEEP_SECONDS", "60"))
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name="sweep-timer", daemon=True)

    def start(self) -> Self:
        self.thread.start()
        return self

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            headers = {"ce-id": uuid.uuid4().hex, "ce-specversion": "1.0", "ce-source": "local/stack.py",
                       "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
                       "Content-Type": "application/json"}
            request = urllib.request.Request(self.url, data=b"{}", headers=headers, method="POST")
            try:
                urllib.request.urlopen(request, timeout=120).close()  # a loopback URL  # nosec B310
            except (urllib.error.URLError, OSError) as exc:  # the next tick sweeps again
                logging.getLogger(__name__).warning("sweep tick failed: %s", exc)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=130)


class StackProcess:
    """`python -m local.stack` as a child process on given ports: the real thing, for tests and benchmarks."""

    def __init__(self, ports: Ports):
        self.ports = ports
        self.output = Path(tempfile.mkstemp(prefix="deepskin-stack-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None
        self.env: dict[str, str] = {}
        self.start_seconds = 0.0

    def start(self, timeout: float = 180.0) -> Self:
        """Start and wait for the ready report; `env` then holds what a client needs (emulators and URLs)."""
        started = time.monotonic()
        args = [sys.executable, "-m", "local.stack"]
        for name, port in asdict(self.ports).items():
            args += ["--port", f"{name}={port}"]
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        while READY_END not in (text := self.output.read_text(encoding="utf-8", errors="replace")):
            if self.process.poll() is not None or time.monotonic() - started > timeout:
                self.stop()
                raise StackError(f"the stack did not start:\n{text[-4000:]}")
            time.sleep(0.1)
        self.start_seconds = time.monotonic() - started
        exports = (line.split("export ", 1)[1] for line in text.splitlines() if line.strip().startswith("export "))
        self.env = dict(export.split("=", 1) for export in exports)
        return self

    def descendants(self) -> set[int]:
        """Every process below the stack (functions' workers and the emulators' JVMs included), from /proc."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields_after_name = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited while we looked
            children.setdefault(int(fields_after_name[1]), []).append(int(stat.parent.name))
        found, pending = set(), [self.process.pid] if self.process else []
        while pending:
            for child in children.get(pending.pop(), []):
                found.add(child)
                pending.append(child)
        return found

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, as a supervisor would; the stack's exit status (None if it had to be killed)."""
        if self.process is None:
            return None
        self.process.terminate()
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None
        finally:
            self.output.unlink(missing_ok=True)
            self.process = None


def stop_together(processes: list[Emulator]) -> None:
    """Each stop waits for its process group to exit; waiting for all at once costs the slowest, not the sum."""
    with ThreadPoolExecutor(max_workers=max(1, len(processes))) as pool:
        list(pool.map(Emulator.stop, processes))


def parse_ports(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Ports:
    ports = Ports.free() if args.free_ports else Ports()
    names = {f.name for f in fields(Ports)}
    for item in args.port:
        name, _, value = item.partition("=")
        if name not in names or not value.isdigit():
            parser.error(f"--port {item}: expected NAME=N with NAME one of {', '.join(sorted(names))}")
        ports = replace(ports, **{name: int(value)})
    return ports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--free-ports", action="store_true", help="pick free ports instead of the fixed ones")
    parser.add_argument("--port", action="append", default=[], metavar="NAME=N",
                        help=f"move one port ({', '.join(f.name for f in fields(Ports))})")
    parser.add_argument("--web-dir", type=Path, default=REPO / "web", help="static files to serve")
    args = parser.parse_args(argv)
    stack = Stack(parse_ports(parser, args), args.web_dir)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # SIGTERM (kill, a supervisor, a test) unwinds like Ctrl-C, so every child is stopped rather than orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        stack.start()  # cleans up after itself when it fails or is interrupted
    except (StackError, EmulatorError) as exc:
        print(f"local stack: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    try:
        print(stack.report(), flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
        print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
